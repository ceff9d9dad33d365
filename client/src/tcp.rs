//! A pipelined TCP ingest client (FORMATS.md §12.1): keeps up to the server's
//! `batches_in_flight_max` batches outstanding and hands back receipts in send order.

use std::collections::VecDeque;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use auditlog_formats::frame::{
    self, Ack, ErrorCode, FrameHeader, FrameType, HelloOk, FRAME_HEADER_BYTES,
};

#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("server refused: {code:?}: {message}")]
    Refused {
        request_id: u32,
        code: Option<ErrorCode>,
        message: String,
    },
    #[error("protocol: {0}")]
    Protocol(String),
}

/// What one batch came back with.
#[derive(Debug)]
pub enum Outcome {
    Acked(Ack),
    Refused {
        code: Option<ErrorCode>,
        message: String,
    },
}

pub struct TcpIngest {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    hello: HelloOk,
    next_id: u32,
    in_flight: VecDeque<u32>,
}

/// Limit for server frames this client accepts: an ACK of a full batch is about 32 bytes
/// per event, so this covers any batch a server of ours would take.
const RESPONSE_BYTES_MAX: u32 = 64 << 20;

impl TcpIngest {
    pub fn connect(
        addr: impl ToSocketAddrs,
        token: &str,
        timeout: Duration,
    ) -> Result<TcpIngest, TcpError> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut c = TcpIngest {
            reader: BufReader::with_capacity(1 << 16, stream.try_clone()?),
            writer: BufWriter::with_capacity(1 << 20, stream),
            hello: HelloOk {
                version: 0,
                tree_hash: 0,
                frame_bytes_max: 0,
                batches_in_flight_max: 0,
                submitter: None,
            },
            next_id: 1,
            in_flight: VecDeque::new(),
        };
        c.writer.write_all(&frame::frame(
            FrameType::Hello,
            0,
            &frame::hello_payload(token),
        ))?;
        c.writer.flush()?;
        let (h, p) = c.read_frame()?;
        match h.frame_type {
            FrameType::HelloOk => {
                c.hello = HelloOk::decode(&p).map_err(|e| TcpError::Protocol(e.to_string()))?;
                Ok(c)
            }
            FrameType::Error => Err(refused(h.request_id, &p)),
            t => Err(TcpError::Protocol(format!("expected HELLO_OK, got {t:?}"))),
        }
    }

    /// The server's HELLO_OK: its limits, and who it records as this connection's submitter.
    pub fn server_limits(&self) -> &HelloOk {
        &self.hello
    }

    /// Sends one batch; if the window is full, first waits for the oldest outcome and
    /// returns it. Returns the new batch's request id and any outcome received meanwhile.
    pub fn send<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(u32, Option<(u32, Outcome)>), TcpError> {
        let mut done = None;
        if self.in_flight.len() as u32 >= self.hello.batches_in_flight_max.max(1) {
            done = Some(self.recv()?);
        }
        let mut payload = vec![0u8; 4];
        for e in events {
            frame::push_batch_event(&mut payload, e);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.writer
            .write_all(&frame::frame(FrameType::Batch, id, &payload))?;
        self.in_flight.push_back(id);
        // Flush when the window has room to spare no more, so batches travel together.
        if self.in_flight.len() as u32 >= self.hello.batches_in_flight_max.max(1) / 2 {
            self.writer.flush()?;
        }
        Ok((id, done))
    }

    /// Waits for the oldest outstanding batch's outcome.
    pub fn recv(&mut self) -> Result<(u32, Outcome), TcpError> {
        self.writer.flush()?;
        let want = self
            .in_flight
            .pop_front()
            .ok_or_else(|| TcpError::Protocol("nothing in flight".into()))?;
        let (h, p) = self.read_frame()?;
        if h.request_id != want {
            return Err(TcpError::Protocol(format!(
                "response for {} while {want} is oldest",
                h.request_id
            )));
        }
        match h.frame_type {
            FrameType::Ack => Ok((
                want,
                Outcome::Acked(
                    frame::decode_ack(&p).map_err(|e| TcpError::Protocol(e.to_string()))?,
                ),
            )),
            FrameType::Error => match refused(h.request_id, &p) {
                TcpError::Refused { code, message, .. } => {
                    Ok((want, Outcome::Refused { code, message }))
                }
                e => Err(e),
            },
            t => Err(TcpError::Protocol(format!("unexpected {t:?}"))),
        }
    }

    /// Waits for every outstanding batch.
    pub fn drain(&mut self) -> Result<Vec<(u32, Outcome)>, TcpError> {
        let mut out = Vec::with_capacity(self.in_flight.len());
        while !self.in_flight.is_empty() {
            out.push(self.recv()?);
        }
        Ok(out)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn read_frame(&mut self) -> Result<(FrameHeader, Vec<u8>), TcpError> {
        let mut h = [0u8; FRAME_HEADER_BYTES];
        self.reader.read_exact(&mut h)?;
        let h = FrameHeader::decode(&h, RESPONSE_BYTES_MAX)
            .map_err(|e| TcpError::Protocol(e.to_string()))?;
        let mut p = vec![0u8; h.payload_bytes as usize];
        self.reader.read_exact(&mut p)?;
        Ok((h, p))
    }
}

fn refused(request_id: u32, p: &[u8]) -> TcpError {
    match frame::decode_error(p) {
        Ok((code, message)) => TcpError::Refused {
            request_id,
            code,
            message,
        },
        Err(e) => TcpError::Protocol(e.to_string()),
    }
}
