//! PLACEHOLDER until the counters module lands.
#![allow(missing_docs, unused_variables)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Minute,
    Hour,
    Day,
    Total,
}
impl Window {
    pub fn name(&self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Total => "total",
        }
    }
    pub fn parse(s: &str) -> Option<Window> {
        match s {
            "minute" => Some(Window::Minute),
            "hour" => Some(Window::Hour),
            "day" => Some(Window::Day),
            "total" => Some(Window::Total),
            _ => None,
        }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowSet(u8);
impl WindowSet {
    pub fn empty() -> Self {
        WindowSet(0)
    }
    pub fn insert(&mut self, w: Window) {
        self.0 |= 1 << (w as u8)
    }
    pub fn contains(&self, w: Window) -> bool {
        self.0 & (1 << (w as u8)) != 0
    }
}
#[derive(Debug, Clone)]
pub struct CounterSpec {
    pub windows: WindowSet,
    pub distinct: bool,
    pub retention_micros: i64,
}
pub trait CounterStore {
    fn add(&mut self, counter: usize, key: u128, distinct: Option<u64>, now: i64);
    fn get(&self, counter: usize, key: u128, window: Window, now: i64) -> u64;
}
pub struct MemoryCounters {
    m: std::collections::HashMap<(usize, u128), Vec<u64>>,
}
impl MemoryCounters {
    pub fn new(specs: Vec<CounterSpec>) -> Self {
        MemoryCounters {
            m: Default::default(),
        }
    }
}
impl CounterStore for MemoryCounters {
    fn add(&mut self, counter: usize, key: u128, distinct: Option<u64>, now: i64) {
        let v = self.m.entry((counter, key)).or_default();
        let d = distinct.unwrap_or(v.len() as u64 + 1_000_000);
        if !v.contains(&d) {
            v.push(d)
        }
    }
    fn get(&self, counter: usize, key: u128, window: Window, now: i64) -> u64 {
        self.m.get(&(counter, key)).map_or(0, |v| v.len() as u64)
    }
}
