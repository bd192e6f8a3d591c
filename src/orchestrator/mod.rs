//! The orchestrator (being written).
