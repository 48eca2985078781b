//! master-core (to be written).
