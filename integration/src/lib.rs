//! integration (to be written).
