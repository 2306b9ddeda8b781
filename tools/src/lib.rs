//! Library half of the `replog` package: what the binary and its tests share.

pub mod load;
