"""fedrec.audit: what a run's privacy promised, spent and proved — the ledger audit
(`run`, `mechanisms`), its report (`report`) and the membership attack (`attack`).
Depends on `fedrec.common` only."""
