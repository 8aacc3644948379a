//! Modbus TCP endpoints: one listener per TCP bus of the site config, framed by the firmware
//! crate's MBAP codec, answered by the bus's [`Node`]s (seal nodes run the firmware's
//! `SealNode`, so writes, settings commits and Read Device Identification work as on RTU).
//!
//! An endpoint behaves like a device or an RS-485-to-TCP gateway: requests for a unit id that no
//! device has, or for a silenced or powered-off device, get no reply (the client times out); a
//! failing device answers exception 04; a read over undefined registers answers exception 02.
//! A stream that is not Modbus TCP (protocol id, length) is closed. Aborting an endpoint's task
//! (`bus-down`) closes the listener and every connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sealwatch_firmware::modbus::{
    encode_mbap, split_mbap, ExceptionCode, MbapBuf, PduBuf, MAX_MBAP_LEN,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::nodes::Node;
use crate::plant::{lock, SharedPlant};

/// The devices of one TCP bus, shared by its connections and the plant clock.
pub(crate) struct TcpBus {
    nodes: Vec<Mutex<Node>>,
    /// Node index by the unit it answers as (kept up to date after settings commits).
    units: Mutex<HashMap<u8, usize>>,
}

fn unpoisoned<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TcpBus {
    /// A bus of `nodes`.
    pub(crate) fn new(nodes: Vec<Node>) -> Self {
        let units = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.unit().map(|u| (u, i)))
            .collect();
        TcpBus {
            nodes: nodes.into_iter().map(Mutex::new).collect(),
            units: Mutex::new(units),
        }
    }

    /// Lets time pass for every node (sensor inputs, power).
    pub(crate) fn tick(&self, plant: &SharedPlant, now: Instant) {
        let plant = lock(plant);
        for node in &self.nodes {
            let _ = unpoisoned(node).tick(&plant, now);
        }
    }

    /// The response PDU to `pdu` for `unit`, if one is given.
    fn answer(&self, plant: &SharedPlant, unit: u8, pdu: &[u8]) -> Option<PduBuf> {
        let index = *unpoisoned(&self.units).get(&unit)?;
        let plant = lock(plant);
        let mut node = unpoisoned(&self.nodes[index]);
        if !plant.answers(node.device) {
            return None;
        }
        let mut out = PduBuf::new();
        if !node.handle_pdu(unit, pdu, &plant, &mut out) {
            return None;
        }
        if plant.devices[node.device].failing && node.is_seal_node() {
            out.clear();
            let function = pdu.first().copied().unwrap_or(0);
            let _ = out
                .extend_from_slice(&[function | 0x80, ExceptionCode::ServerDeviceFailure.code()]);
        }
        if node.unit() != Some(unit) {
            // A settings commit gave the node another unit id: it answers as that from now on.
            let mut units = unpoisoned(&self.units);
            units.remove(&unit);
            if let Some(new) = node.unit() {
                units.insert(new, index);
            }
        }
        Some(out)
    }
}

/// Serves `listener` until the task is aborted; each connection's requests in order.
pub(crate) fn listen(
    plant: SharedPlant,
    bus: Arc<TcpBus>,
    listener: TcpListener,
    reply_delay: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Dropped with the task: aborting the endpoint closes every connection.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        connections.spawn(serve_connection(plant.clone(), bus.clone(), stream, peer, reply_delay));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

async fn serve_connection(
    plant: SharedPlant,
    bus: Arc<TcpBus>,
    mut stream: TcpStream,
    peer: SocketAddr,
    reply_delay: Duration,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(2 * MAX_MBAP_LEN);
    let mut chunk = [0u8; 512];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection ended");
                return;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let (transaction, unit, answer, used) = match split_mbap(&buf) {
                Ok(None) => break,
                Ok(Some((frame, used))) => (
                    frame.transaction,
                    frame.unit,
                    bus.answer(&plant, frame.unit, frame.pdu),
                    used,
                ),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "not Modbus TCP; closing the connection");
                    return;
                }
            };
            buf.drain(..used);
            let Some(pdu) = answer else {
                continue;
            };
            if !reply_delay.is_zero() {
                tokio::time::sleep(reply_delay).await;
            }
            let mut frame = MbapBuf::new();
            if encode_mbap(transaction, unit, &pdu, &mut frame).is_err() {
                continue;
            }
            if stream.write_all(&frame).await.is_err() {
                return;
            }
        }
    }
}
