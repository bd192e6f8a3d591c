//! The scheduler (being written).
mod constraint;
pub use constraint::Constraint;
