//! The video producer.

pub mod control;
