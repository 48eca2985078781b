//! isolation (to be written).
