//! One connection to a platform: the I/O around [`Delivery`] — reading frames, writing packets
//! with a send timeout, answering requests, storing the acknowledged position. Generic over the
//! byte stream, so tests run it over an in-memory pipe.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::{self, cn, CodecError, Frame, FrameReader};
use super::delivery::{Delivery, NoAck, Step};
use super::messages::{
    classify, history_answer, request_response, result_frame, time_answer, upload_frame, Request,
};
use super::{next_qn, values_after, values_between, Hj212Error, Hj212Uplink, BATCH};

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum End {
    /// The uplink was told to stop (or the store is gone).
    Stopped,
    /// The connection is lost; the uplink connects again after a backoff.
    Lost(Lost),
}

/// Why a connection is given up.
#[derive(Debug, thiserror::Error)]
pub(super) enum Lost {
    /// The connection was not made.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The connection was not made in time.
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// A write failed.
    #[error("send failed: {0}")]
    Send(std::io::Error),
    /// A write did not finish in time.
    #[error("send timed out after {0:?}")]
    SendTimeout(Duration),
    /// A frame of ours could not be built.
    #[error("cannot write a {cn} frame: {source}")]
    Frame {
        /// Its CN.
        cn: String,
        /// Why.
        source: CodecError,
    },
    /// The platform closed the connection (or reading from it failed).
    #[error("the platform closed the connection")]
    Closed,
    /// The platform did not acknowledge an upload.
    #[error(transparent)]
    NoAck(#[from] NoAck),
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads frames from `read` into a channel until the stream ends.
fn spawn_reader<R: AsyncRead + Unpin + Send + 'static>(
    mut read: R,
) -> (mpsc::Receiver<Result<Frame, CodecError>>, AbortOnDrop) {
    let (tx, incoming) = mpsc::channel::<Result<Frame, CodecError>>(64);
    let reader = tokio::spawn(async move {
        let mut frames = FrameReader::new();
        let mut buf = [0u8; 2048];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    frames.push(&buf[..n]);
                    while let Some(f) = frames.next_frame() {
                        if tx.send(f).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    (incoming, AbortOnDrop(reader))
}

impl Hj212Uplink {
    /// One connection: delivers values one at a time, each until acknowledged, answers
    /// requests and sends real-time frames, until the connection is lost or `stop`.
    pub(super) async fn session<S: AsyncRead + AsyncWrite + Send + 'static>(
        &mut self,
        stream: S,
        stop: &CancellationToken,
        acked: &mut Option<i64>,
    ) -> End {
        let (read, mut write) = tokio::io::split(stream);
        let (mut incoming, _reader) = spawn_reader(read);
        let mut delivery = Delivery::new(
            acked.unwrap_or(0),
            self.config.timeout,
            self.config.retries,
            Instant::now(),
        );
        let mut realtime = self
            .config
            .realtime
            .filter(|_| self.live.is_some())
            .map(|period| {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick
            });
        loop {
            let wake = match self.step(&mut delivery, &mut write).await {
                Ok(Some(wake)) => wake,
                Ok(None) => continue,
                Err(end) => return end,
            };
            if delivery.acked() != acked.unwrap_or(0) {
                *acked = Some(delivery.acked());
                if self.save_position(delivery.acked()).await.is_err() {
                    return End::Stopped;
                }
            }
            let seal_at = self.coalescer.next_due_ms().map(|ms| {
                Instant::now()
                    + Duration::from_millis(ms.saturating_sub(crate::clock::now_ms()).max(0) as u64)
            });
            tokio::select! {
                () = stop.cancelled() => return End::Stopped,
                () = async {
                    match seal_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    let drafts = self.coalescer.due(crate::clock::now_ms());
                    if !drafts.is_empty() && self.store.send_evidence(drafts).await.is_err() {
                        return End::Stopped;
                    }
                }
                _ = async {
                    match realtime.as_mut() {
                        Some(tick) => {
                            tick.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    let frames = self.realtime_frames();
                    if let Err(e) = self.write(&mut write, &frames).await {
                        return End::Lost(e);
                    }
                }
                msg = incoming.recv() => match msg {
                    None => return End::Lost(Lost::Closed),
                    Some(Err(e)) => {
                        if let Some(repeats) = self.garbage.allow(std::time::Instant::now()) {
                            tracing::warn!(platform = %self.config.name, error = %e, repeats_since_last_line = repeats, "unreadable frame from the HJ 212 platform; ignored");
                        }
                    }
                    Some(Ok(frame)) if frame.cn == cn::DATA_RESPONSE => {
                        match super::guard::authenticate(&frame, &self.config.pw, &self.config.mn) {
                            Ok(_) => {
                                if delivery.on_ack(&frame.qn).is_none() {
                                    tracing::debug!(platform = %self.config.name, qn = %frame.qn, "9014 for no upload in flight; ignored");
                                }
                            }
                            // Not taken as an acknowledgement: the upload stays in flight.
                            Err(code) => {
                                if let Err(e) = self.refuse(&frame, code, &mut write).await {
                                    return End::Lost(e);
                                }
                            }
                        }
                    }
                    Some(Ok(frame)) => {
                        if !self.requests.allow(std::time::Instant::now()) {
                            if let Some(repeats) = self.dropped.allow(std::time::Instant::now()) {
                                tracing::warn!(platform = %self.config.name, cn = %frame.cn.escape_debug(), repeats_since_last_line = repeats, per_s = super::guard::REQUESTS_PER_S, burst = super::guard::REQUEST_BURST, "the HJ 212 platform asks more often than answered; request dropped");
                            }
                            continue;
                        }
                        if let Err(e) = self.answer(&frame, &mut write).await {
                            return End::Lost(e);
                        }
                    }
                },
                () = tokio::time::sleep_until(wake) => {
                    match delivery.on_deadline(Instant::now()) {
                        Ok(Some(packets)) => {
                            tracing::debug!(platform = %self.config.name, qn = ?delivery.in_flight_qn(), "no answer; resending");
                            if let Err(e) = self.write_packets(&mut write, &packets).await {
                                return End::Lost(e);
                            }
                        }
                        Ok(None) => {}
                        Err(no_ack) => return End::Lost(no_ack.into()),
                    }
                }
            }
        }
    }

    /// Carries out what delivery asks for now: the instant to wait for, or `None` to ask again
    /// at once.
    async fn step<W: AsyncWrite + Unpin>(
        &mut self,
        delivery: &mut Delivery,
        write: &mut W,
    ) -> Result<Option<Instant>, End> {
        let (mns, header, last_qn_ms) = (&self.config.mn, &self.header, &mut self.last_qn_ms);
        let step = delivery.next_send(Instant::now(), &mut |v| {
            let mn = &mns.iter().find(|(a, _)| *a == v.analyzer)?.1;
            let qn = next_qn(last_qn_ms, header.tz);
            Some(upload_frame(v, mn, qn, header))
        });
        match step {
            Step::Load { after } => {
                match self
                    .blocking(move |store| values_after(store, after, BATCH))
                    .await
                {
                    Ok(values) => delivery.offer(values, Instant::now()),
                    Err(e) => {
                        tracing::error!(platform = %self.config.name, error = %e, "HJ 212 uplink cannot read NMHC values");
                        delivery.offer(Vec::new(), Instant::now());
                    }
                }
                Ok(None)
            }
            Step::Send(packets) => {
                self.write_packets(write, &packets)
                    .await
                    .map_err(End::Lost)?;
                Ok(None)
            }
            Step::Unframable { id, error } => {
                tracing::error!(platform = %self.config.name, id, %error, "an NMHC value cannot be framed; passed over");
                Ok(None)
            }
            Step::Wait(until) => Ok(Some(until)),
        }
    }

    async fn save_position(&self, position: i64) -> Result<(), crate::store::StoreError> {
        self.store.set_cursor(&self.cursor, position as u64).await
    }

    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::store::Store) -> Result<T, Hj212Error> + Send + 'static,
    ) -> Result<T, Hj212Error> {
        self.reader.read(f).await
    }

    /// Builds and writes `frames`.
    async fn write<W: AsyncWrite + Unpin>(&self, w: &mut W, frames: &[Frame]) -> Result<(), Lost> {
        for f in frames {
            let packets = codec::build(f).map_err(|source| Lost::Frame {
                cn: f.cn.clone(),
                source,
            })?;
            self.write_packets(w, &packets).await?;
        }
        Ok(())
    }

    /// Writes packets, each within the platform's timeout.
    async fn write_packets<W: AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        packets: &[String],
    ) -> Result<(), Lost> {
        for p in packets {
            match tokio::time::timeout(self.config.timeout, w.write_all(p.as_bytes())).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Lost::Send(e)),
                Err(_) => return Err(Lost::SendTimeout(self.config.timeout)),
            }
        }
        Ok(())
    }

    /// Answers a frame whose PW or MN is wrong with 9011 `QnRtn` `code` (within the request
    /// budget; beyond it, only counted).
    async fn refuse<W: AsyncWrite + Unpin>(
        &mut self,
        frame: &Frame,
        code: u32,
        write: &mut W,
    ) -> Result<(), Lost> {
        let now = std::time::Instant::now();
        if let Some(repeats) = self.refused.allow(now) {
            tracing::warn!(platform = %self.config.name, cn = %frame.cn.escape_debug(), mn = %frame.mn.escape_debug(), qn_rtn = code, repeats_since_last_line = repeats, "HJ 212 frame with a wrong PW or an unknown MN; refused, not taken");
        }
        if !self.requests.allow(now) {
            return Ok(());
        }
        let answer = request_response(frame, code, self.header.version);
        self.write(write, &[answer]).await
    }

    /// Answers a platform request.
    async fn answer<W: AsyncWrite + Unpin>(
        &mut self,
        frame: &Frame,
        write: &mut W,
    ) -> Result<(), Lost> {
        let name = self.config.name.clone();
        let request = classify(frame, &self.config.pw, &self.config.mn, self.header.tz);
        if let Request::Refuse(code @ (3 | 4)) = request {
            return self.refuse(frame, code, write).await;
        }
        tracing::info!(platform = %name, cn = %frame.cn.escape_debug(), qn = %frame.qn.escape_debug(), ?request, "HJ 212 platform request");
        let version = self.header.version;
        let frames = match &request {
            Request::Refuse(code) => vec![request_response(frame, *code, version)],
            Request::History {
                interval,
                analyzer,
                from_ms,
                to_ms,
            } => {
                let (interval, analyzer, from_ms, to_ms) =
                    (*interval, analyzer.clone(), *from_ms, *to_ms);
                match self
                    .blocking(move |store| {
                        values_between(store, interval, &analyzer, from_ms, to_ms)
                    })
                    .await
                {
                    Ok(values) => {
                        if values.len() > super::guard::MAX_HISTORY_ROWS {
                            tracing::warn!(platform = %name, rows = values.len(), cap = super::guard::MAX_HISTORY_ROWS, "a history answer holds more rows than one answer gives; the first are sent");
                        }
                        history_answer(frame, &values, &self.header)
                    }
                    Err(e) => {
                        tracing::error!(platform = %name, error = %e, "cannot read history for the HJ 212 platform");
                        vec![
                            request_response(frame, 1, version),
                            result_frame(frame, 2, version),
                        ]
                    }
                }
            }
            Request::GetTime | Request::SetTime(_) => {
                let (frames, draft) =
                    time_answer(frame, &request, crate::clock::now_ms(), &name, &self.header);
                if let Some(body) = draft {
                    let now = crate::clock::now_ms();
                    let drafts = self.coalescer.offer(now, "platform_time_set", &name, body);
                    if !drafts.is_empty() {
                        tracing::warn!(platform = %name, requested = ?request, "the HJ 212 platform asked to set the clock; not applied, recorded as evidence (repeats within a minute are counted in one record)");
                        let _ = self.store.send_evidence(drafts).await;
                    }
                }
                frames
            }
        };
        self.write(write, &frames).await
    }
}
