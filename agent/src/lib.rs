//! sealwatch agent: polls furnace-top seal sensors and VOC analyzers over Modbus, keeps what they
//! say in a local SQLite store, and shows the plant's seal status.
//!
//! Data flows one way: bus tasks ([`poll`]) → pipeline ([`run`]) → [`store`], with the live
//! [`state`] read by the [`status`] page.

pub mod backoff;
pub mod bounded;
pub mod clock;
pub mod commission;
pub mod config;
pub mod evidence;
pub mod ledger;
pub mod limits;
pub mod modbus;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod poll;
pub mod replay;
pub mod restart;
pub mod rules;
pub mod run;
pub mod state;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod uplink;
