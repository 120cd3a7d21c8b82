//! timeshard-server: the HTTP server that speaks the Kinesis Video Streams and Kinesis Data
//! Streams wire protocols on top of the shard storage engine (`timeshard-storage`).
//!
//! The binary (`src/main.rs`) is a thin shell: parse the command line, set up logging, call
//! [`start`], wait for a signal, [`RunningServer::shutdown`]. Everything else is in this library
//! so integration tests can run the real server in-process:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join("timeshard-doc");
//! let config = timeshard_server::Config {
//!     data_dir: dir,
//!     listen: "127.0.0.1:0".parse()?,
//!     ..Default::default()
//! };
//! let server = timeshard_server::start(config).await?;
//! println!("serving on {}", server.local_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Map: [`config`] (options, validation) -> [`http`] (listener, connections, shutdown) ->
//! [`api`] (routing, SigV4, error tables, one module per API family) -> [`state`] (the store and
//! shared state handlers see). [`data`] and [`video`] hold each product's behaviour free of HTTP.
//! [`metrics`] holds the HTTP counters behind `/metrics`.

pub mod api;
pub mod config;
pub mod data;
pub mod http;
pub mod metrics;
pub mod state;
pub mod video;

pub use crate::config::Config;
pub use crate::http::{Body, RunningServer, StartError, start, start_with_clock};
