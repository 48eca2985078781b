//! framework (to be written).
