//! `shoal-sim`: a deterministic discrete-event simulator hosting shoal's
//! protocol machines for hundreds to thousands of virtual nodes.
#![forbid(unsafe_code)]
