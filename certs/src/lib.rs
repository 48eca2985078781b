//! certs (to be written).
