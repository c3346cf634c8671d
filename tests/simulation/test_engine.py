"""The two places where fedrec's simulation leans on Flower internals fail loudly, here, when
Flower changes under them (flwr is pinned; these tests make an upgrade a visible decision)."""

import ast
import inspect
from pathlib import Path

import flwr

from fedrec.simulation import engine


def _original_source(module, name: str) -> str:
    """A function's source as the installed module file has it (even after a patch)."""
    text = Path(module.__file__).read_text()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(text, node)
    raise AssertionError(f"{module.__name__}.{name} is gone")


def test_the_pinned_flower_is_the_one_the_engine_was_written_for():
    assert flwr.__version__ == engine.FLWR_VERSION


def test_run_simulation_internals_still_take_the_run_and_its_config():
    from flwr.simulation.run_simulation import _run_simulation

    params = inspect.signature(_run_simulation).parameters
    for name in ("num_supernodes", "exit_event", "client_app", "server_app", "backend_config",
                 "app_dir", "is_app", "run", "server_app_context"):
        assert name in params, f"_run_simulation lost its `{name}` parameter"


def test_the_message_sweep_patch_replaces_the_function_it_was_measured_against():
    from flwr.server.superlink.fleet.vce import vce_api

    source = _original_source(vce_api, "add_messages_to_queue")
    # the loop the patch replaces: every registered node polled every 0.1 s
    assert "for node_id in nodes_mapping.keys():" in source
    assert "state.get_message_ins(node_id=node_id, limit=1)" in source
    assert "f_stop.wait(0.1)" in source
    patched = inspect.signature(vce_api.add_messages_to_queue).parameters
    assert list(patched) == ["state", "queue", "nodes_mapping", "f_stop"]
