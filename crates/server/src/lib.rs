//! skywarden HTTP surface.
