"""An audit (`fedrec.audit.run` of a run or a sweep, `fedrec.audit.device` of a device's
store) as a report a privacy officer can hand on: Markdown, HTML with the plots embedded, or
JSON, and the plots as PNG files beside it."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from fedrec.common import atomic

MEANING = (
    "**What ε means.** A differential-privacy guarantee compares two worlds that differ in one "
    "*unit* of data. Whatever anyone observes is at most e^ε times more likely in one world "
    "than in the other, except with probability δ. Small ε is strong: ε = 1 moves an "
    "observer's odds about one unit by at most 2.7×; ε = 8 is a weak worst-case bound, in "
    "the range published production systems use.")
UNIT = {
    "record": "**Unit: one record** — a window of up to the configured number of consecutive "
              "interactions of one user. Each device runs DP-SGD and enforces its own budget; "
              "the guarantee holds against everyone who sees its updates, the server included.",
    "user": "**Unit: one user** — everything a user contributes. Clients clip their update and "
            "add a share of the noise; the guarantee covers the aggregated model, against anyone "
            "who sees it.",
    "off": "**No differential privacy** was promised for this run: nothing below bounds what "
           "its model or updates reveal.",
}
DELTA_CAVEAT = ("δ is the probability that the bound fails; it should be well below 1 / (number "
                "of units).")
NOISE_CAVEAT = ("The cross-check recomputes ε from the logged parameters; it cannot tell whether "
                "a device really added the noise it logged.")
CAVEATS = [
    "User-level DP with distributed noise assumes honest clients: a client that skips its share "
    "of the noise weakens everyone's guarantee, and nobody can see it from outside.",
    DELTA_CAVEAT,
    "Federated-evaluation metrics and who took part in a round are not covered by ε.",
    NOISE_CAVEAT,
]
DEVICE_CAVEATS = [
    NOISE_CAVEAT, DELTA_CAVEAT,
    "A device's store is evidence only as far as the device is: one that rewrites its account "
    "and its ledger together, consistently, cannot be told apart from an honest one.",
]


def plots(report: dict, out_dir: Path, stem: str) -> dict[str, Path]:
    """PNG plots of `report` in `out_dir`: ε by round, ε over clients, utility vs ε."""
    from fedrec.common.plots import pyplot, save_png

    plt = pyplot()
    made: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        fig.tight_layout()
        made[name] = save_png(fig, out_dir / f"{stem}-{name}.png", dpi=110)

    if "device" in report:
        spent = report["spent"]
        if spent["epsilon_by_release"]:
            fig, ax = plt.subplots(figsize=(6, 3.2))
            releases = spent["epsilon_by_release"]
            ax.plot([r[0] for r in releases], [r[3] for r in releases], marker=".",
                    label="dp-accounting")
            logged = [r for r in releases if r[2] is not None]
            ax.plot([r[0] for r in logged], [r[2] for r in logged], ls="", marker="x",
                    label="ledger")
            if spent["budget"] is not None:
                ax.axhline(spent["budget"], color="grey", ls="--", lw=1, label="budget")
            ax.set(xlabel="release", ylabel="ε (record-level)", title="ε spent by release")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend()
            save(fig, "epsilon-by-release")
        return made

    for run in report.get("runs", [report]):
        spent = run.get("spent", {})
        curve = spent.get("epsilon_by_round") or []
        if curve and "runs" not in report:
            fig, ax = plt.subplots(figsize=(6, 3.2))
            rounds = [c[0] for c in curve]
            if spent["unit"] == "user":
                ax.plot(rounds, [c[1] for c in curve], marker=".", label="federation ε (user)")
            else:
                ax.plot(rounds, [c[2] for c in curve], marker=".", label="max over clients")
                ax.plot(rounds, [c[1] for c in curve], marker=".", label="median over clients")
            ax.axhline(spent["budget"], color="grey", ls="--", lw=1, label="budget")
            ax.set(xlabel="round", ylabel=f"ε ({spent['unit']}-level)", title="ε spent by round")
            ax.legend()
            save(fig, "epsilon-by-round")
        per_client = spent.get("epsilon_by_client")
        if per_client and "runs" not in report:
            fig, ax = plt.subplots(figsize=(6, 3.2))
            ax.hist(list(per_client.values()), bins=30)
            ax.axvline(spent["budget"], color="grey", ls="--", lw=1, label="budget")
            ax.set(xlabel="ε spent (record-level)", ylabel="clients",
                   title="ε spent per client")
            ax.legend()
            save(fig, "epsilon-by-client")
    points = report.get("utility_vs_epsilon") or []
    if points:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for unit in sorted({p["unit"] for p in points}):
            pts = sorted((p for p in points if p["unit"] == unit),
                         key=lambda p: p["epsilon"] or 0)
            ax.plot([p["epsilon"] or 0 for p in pts], [p["ndcg@10"] for p in pts], marker="o",
                    label=f"{unit}-level" if unit != "off" else "no DP (ε = 0 shown)")
        ax.set(xlabel="ε spent", ylabel="NDCG@10", title="utility against privacy")
        ax.legend()
        save(fig, "utility-vs-epsilon")
    return made


def render(report: dict, fmt: str, out: Path) -> list[Path]:
    """Write `report` as `fmt` (md, html or json) to `out`, plots beside it; the files."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        atomic.write_text(out, json.dumps(report, indent=1, default=str))
        return [out]
    images = plots(report, out.parent, out.stem)
    text = markdown(report, {k: p.name for k, p in images.items()})
    if fmt == "html":
        text = to_html(text, images)
    atomic.write_text(out, text)
    return [out, *images.values()]


def markdown(report: dict, images: dict[str, str]) -> str:
    if "device" in report:
        return "\n".join(_device_markdown(report, images)) + "\n"
    if "runs" in report:
        parts = [f"# Privacy audit of the sweep `{report['sweep']}`", "",
                 f"**Verdict: {report['verdict'].upper()}** ({len(report['runs'])} runs)", ""]
        rows = [[Path(r["run"]).name, r["promise"]["unit"], _num(r["promise"]["epsilon"]),
                 _num(r["spent"].get("epsilon", r["spent"].get("epsilon_max"))),
                 _num((r["utility"] or {}).get("ndcg@10")), r["verdict"]] for r in report["runs"]]
        parts += _table(["run", "unit", "ε budget", "ε spent (max)", "NDCG@10", "verdict"], rows)
        if "utility-vs-epsilon" in images:
            parts += ["", f"![utility vs ε]({images['utility-vs-epsilon']})"]
        for r in report["runs"]:
            parts += ["", "---", "", *_run_markdown(r, {}, level=2)]
        return "\n".join(parts) + "\n"
    return "\n".join(_run_markdown(report, images, level=1)) + "\n"


def _run_markdown(r: dict, images: dict[str, str], level: int) -> list[str]:
    h = "#" * level
    p, spent, check = r["promise"], r["spent"], r["crosscheck"]
    failures = [f for f in r["findings"] if f["severity"] == "failure"]
    if failures:
        summary = f"{len(failures)} failure(s), listed under Findings."
    elif p["unit"] == "off":
        summary = "no differential privacy was promised, so there is no budget to check"
        summary += (", and every outgoing message matched the allow-list." if r["egress"]
                    else ".")
    else:
        summary = ("every ledger entry is reproducible by an independent accountant, describes "
                   "the mechanism this run runs, and stays within the budget"
                   + (", and every outgoing message matched the allow-list." if r["egress"]
                      else "."))
    out = [f"{h} Privacy audit of `{r['run']}`", "",
           f"**Verdict: {r['verdict'].upper()}** — " + summary
           , "", MEANING, "", UNIT[p["unit"]], "", f"{h}# What was promised", ""]
    out += _table(["", ""], [[k.replace("_", " "), _num(v)] for k, v in p.items()
                             if v is not None])
    out += ["", f"{h}# What was spent", ""]
    if spent["unit"] == "user":
        out += [f"The federation spent **ε = {spent['epsilon']:.3f}** (user-level, δ = "
                f"{p['delta']:g}) of its budget {spent['budget']:g} over "
                f"{len(spent['epsilon_by_round'])} releases (aggregated rounds, redone rounds "
                "counted again)."]
        if spent.get("budget_exhausted_after_round") is not None:
            out += ["", f"**The budget ran out after round {spent['budget_exhausted_after_round']}"
                        f"**: {spent['rounds_blocked_by_budget']} later round(s) were not "
                        f"aggregated, because one more aggregate would have exceeded ε = "
                        f"{spent['budget']:g}."]
    elif spent["unit"] == "record":
        never = spent["never_took_part"]
        out += [f"{spent['clients_released']} clients released updates"
                + (f"; {never} of {r['clients_total']} never took part" if never is not None
                   else "") + ".",
                f"Per-client ε (record-level, δ = {p['delta']:g}): min "
                f"**{spent['epsilon_min']:.3f}**, median **{spent['epsilon_median']:.3f}**, max "
                f"**{spent['epsilon_max']:.3f}** of the budget {spent['budget']:g}; "
                f"{spent['clients_at_cap']} clients are at their cap (one more release would "
                "exceed it)."]
        if spent.get("pseudonyms_rotated"):
            out += [f"{spent['pseudonyms_rotated']} releases carry a rotated pseudonym: each "
                    "device is one client, under the first pseudonym it released with."]
    else:
        out += ["Nothing: the run had no differential privacy."]
    for key, title in (("epsilon-by-round", "ε by round"), ("epsilon-by-client", "ε per client")):
        if key in images:
            out += ["", f"![{title}]({images[key]})"]
    out += _crosscheck_markdown(check, h, "their logged σ, q, steps and δ", "the run's")
    if r["egress"]:
        e = r["egress"]
        out += ["", f"{h}# What left the devices", "",
                f"The egress log `{e['path']}` holds {e['messages']} messages ("
                + ", ".join(f"{n} {k}" for k, n in sorted(e["by_type"].items()))
                + f"); {e['errors']} were error replies; **{e['violations']}** lines fall "
                  "outside the run's wire schema."]
    if r.get("anonymization") and "generalization" in r["anonymization"]:
        a = r["anonymization"]
        out += ["", f"{h}# Profiles on the devices", "",
                f"Devices generalized profile fields as: {a['generalization']} — the smallest "
                f"group of users sharing them has k = {a['k']} (target {a['k_target']}), "
                f"{a['unique']} users unique."]
    if r["utility"]:
        ndcg = r["utility"].get("ndcg@10")
        out += ["", "Utility of the final model: NDCG@10 = "
                + (f"{ndcg:.4f}." if isinstance(ndcg, (int, float)) else "— (not evaluated).")]
    out += _findings_markdown(r["findings"], h)
    out += ["", f"{h}# Caveats", "", *[f"- {c}" for c in CAVEATS]]
    return out


def _device_markdown(r: dict, images: dict[str, str]) -> list[str]:
    p, spent = r["promise"], r["spent"]
    failures = [f for f in r["findings"] if f["severity"] == "failure"]
    budget = spent["budget"]
    if failures:
        summary = f"{len(failures)} failure(s), listed under Findings."
    else:
        summary = ("every ledger line shows a charge of the device's privacy account, and its ε "
                   "is reproducible by an independent accountant from the account's history"
                   + (", within the budget." if budget is not None
                      else "; the store records no budget to check it against."))
    names = r["pseudonyms"]
    rotated = names[:-1] if names[-1:] == [r["pseudonym"]] else names  # earlier names only
    facts = [["store", f"`{r['device']}` (schema version {r['schema_version']})"],
             ["pseudonym", r["pseudonym"] or "—"],
             ["earlier pseudonyms in its ledger", ", ".join(rotated) or "—"],
             ["ε budget", _num(budget) if budget is not None else "not recorded in the store"],
             ["δ", _num(p["delta"])], ["accountant", _num(p["accountant"])],
             ["σ", _num(p["noise_multiplier"])]]
    out = [f"# Privacy audit of the device store `{r['device']}`", "",
           f"**Verdict: {r['verdict'].upper()}** — " + summary, "", MEANING, "", UNIT["record"],
           "", "## The device", "", *_table(["", ""], facts), "", "## What was spent", ""]
    if spent["charges"]:
        q_low, q_high = spent["sample_rate"]
        steps_low, steps_high = spent["steps"]
        out += [f"The device spent **ε = {spent['epsilon']:.3f}** (record-level, δ = "
                f"{spent['delta']:g}, by dp-accounting over every charge)"
                + (f" of its budget {budget:g}" if budget is not None else "")
                + f" in {spent['charges']} charged releases; its ledger holds "
                  f"{spent['releases']} lines, the last at ε = {spent['epsilon_ledger']:.3f}.",
                "Mechanisms: σ = " + ", ".join(f"{s:g}" for s in spent["noise_multiplier"])
                + f"; q = {q_low:g}" + (f" to {q_high:g}" if q_high != q_low else "")
                + f"; {steps_low}" + (f" to {steps_high}" if steps_high != steps_low else "")
                + f" steps a release, {spent['steps_total']} in all."]
    else:
        out += ["Nothing: the device has charged no release."]
    if "epsilon-by-release" in images:
        out += ["", f"![ε by release]({images['epsilon-by-release']})"]
    out += _crosscheck_markdown(r["crosscheck"], "#", "the device account's history of σ, q "
                                "and steps up to their release, at its δ,", "the ledger's")
    out += _findings_markdown(r["findings"], "#")
    out += ["", "## Caveats", "", *[f"- {c}" for c in DEVICE_CAVEATS]]
    return out


def _crosscheck_markdown(check: dict, h: str, source: str, whose: str) -> list[str]:
    if not check.get("lines"):
        return []
    out = ["", f"{h}# Independent cross-check", "",
           f"All {check['lines']} valid ledger entries were recomputed from {source} with "
           f"Google's dp-accounting (RDP; PLD for {check['pld_lines']} of them). Largest "
           f"difference to {whose} numbers: {check['max_difference_rdp']:.2%} against RDP"
           + (f", {check['max_difference_pld']:.2%} against PLD"
              if check["max_difference_pld"] is not None else "")
           + f" (failure above {check['tolerance']:.0%} against {check['reference']}; PLD "
             "is the tighter accountant, so an RDP ledger sits slightly above it).", ""]
    return out + _table(["client", "round", "ledger ε", "RDP", "PLD", "difference"],
                        [[c["client"], c["round"], f"{c['epsilon']:.4f}", f"{c['rdp']:.4f}",
                          "—" if c["pld"] is None else f"{c['pld']:.4f}",
                          f"{c['difference']:.3%}"] for c in check["largest_differences"]])


def _findings_markdown(findings: list[dict], h: str) -> list[str]:
    return ["", f"{h}# Findings", "",
            *([f"- **{f['severity']}**" + (f" (ledger line {f['line']})" if f["line"] else "")
               + f": {f['what']}" for f in findings] or ["None."])]


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(str(c) for c in row) + " |" for row in rows]]


def _num(v) -> str:
    if v is None:
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def to_html(md: str, images: dict[str, Path]) -> str:
    """A self-contained HTML page of the Markdown this module writes (headings, paragraphs,
    tables, lists, bold, code, images embedded as data URIs)."""
    import re

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
        text = re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    embedded = {p.name: base64.b64encode(p.read_bytes()).decode() for p in images.values()}
    body, table, items = [], [], []

    def flush():
        if table:
            head, *rest = [[c.strip() for c in row.strip("|").split("|")] for row in table
                           if not set(row) <= set("|-")]
            body.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>"
                                  for r in rest) + "</table>")
            table.clear()
        if items:
            body.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush()
        if match := re.match(r"(#+) (.*)", line):
            level = len(match.group(1))
            body.append(f"<h{level}>{inline(match.group(2))}</h{level}>")
        elif match := re.match(r"!\[(.*)\]\((.*)\)", line):
            name = match.group(2)
            src = f"data:image/png;base64,{embedded[name]}" if name in embedded else name
            body.append(f'<img alt="{html.escape(match.group(1))}" src="{src}">')
        elif line == "---":
            body.append("<hr>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush()
    style = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}"
             "img{max-width:100%}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>fedrec privacy audit"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")
