//! Names the client connections the server closes with an error.
//!
//! hyper and h2 close a connection that breaks HTTP/2's rules or floods the server (too many
//! resets, too many empty or tiny frames, too many pending streams: `ENHANCE_YOUR_CALM`) with a
//! GOAWAY frame, and log it only at debug level; the client sees every RPC on the connection
//! fail at once. [`GoawaySniffer`] follows the frames the server writes on an HTTP/2 connection
//! and logs each GOAWAY that carries an error code at warn level, with the client's address, the
//! code and h2's reason (its debug data, e.g. `too_many_resets`).
//!
//! It reads only frame headers (nine bytes per frame) and the first bytes of a GOAWAY's payload;
//! it never changes what is written.

use std::net::SocketAddr;

/// The client connection preface that starts every HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const GOAWAY: u8 = 0x7;
/// How much of a GOAWAY's payload is kept: last stream id, error code and the start of the
/// debug data.
const GOAWAY_KEPT: usize = 8 + 200;

enum Protocol {
    /// Not known until the client's first bytes are read: `matched` bytes of the preface so far.
    Unknown {
        matched: usize,
    },
    Http2,
    /// HTTP/1: nothing to follow.
    Other,
}

/// Follows the frames written on one connection (see the module comment).
pub struct GoawaySniffer {
    peer: Option<SocketAddr>,
    protocol: Protocol,
    header: [u8; FRAME_HEADER],
    header_len: usize,
    /// Payload bytes of the current frame not yet seen.
    payload_left: usize,
    /// The current frame is a GOAWAY: its payload so far (at most `GOAWAY_KEPT` bytes).
    goaway: Option<Vec<u8>>,
}

/// A GOAWAY the server wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goaway {
    pub last_stream_id: u32,
    pub error_code: u32,
    pub debug_data: String,
}

impl GoawaySniffer {
    pub fn new(peer: Option<SocketAddr>) -> Self {
        Self {
            peer,
            protocol: Protocol::Unknown { matched: 0 },
            header: [0; FRAME_HEADER],
            header_len: 0,
            payload_left: 0,
            goaway: None,
        }
    }

    /// Bytes read from the client: the first ones tell HTTP/2 from HTTP/1.
    pub fn read(&mut self, data: &[u8]) {
        let Protocol::Unknown { matched } = self.protocol else {
            return;
        };
        let n = data.len().min(PREFACE.len() - matched);
        self.protocol = if data[..n] != PREFACE[matched..matched + n] {
            Protocol::Other
        } else if matched + n == PREFACE.len() {
            Protocol::Http2
        } else {
            Protocol::Unknown {
                matched: matched + n,
            }
        };
    }

    /// Bytes the server wrote (in order): logs each GOAWAY with an error as it completes.
    pub fn written(&mut self, data: &[u8]) {
        for g in self.frames(data) {
            log(self.peer, &g);
        }
    }

    /// The GOAWAY frames completed by `data`, written after everything passed before.
    fn frames(&mut self, mut data: &[u8]) -> Vec<Goaway> {
        let mut done = Vec::new();
        match self.protocol {
            Protocol::Http2 => {}
            // The server speaks first only in HTTP/1 (hyper reads the preface before writing).
            Protocol::Unknown { .. } => {
                self.protocol = Protocol::Other;
                return done;
            }
            Protocol::Other => return done,
        }
        while !data.is_empty() {
            if self.header_len < FRAME_HEADER {
                let n = data.len().min(FRAME_HEADER - self.header_len);
                self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
                self.header_len += n;
                data = &data[n..];
                if self.header_len < FRAME_HEADER {
                    break;
                }
                let h = &self.header;
                self.payload_left =
                    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                self.goaway = (h[3] == GOAWAY).then(Vec::new);
            }
            let n = data.len().min(self.payload_left);
            if let Some(kept) = &mut self.goaway {
                let room = GOAWAY_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..n.min(room)]);
            }
            self.payload_left -= n;
            data = &data[n..];
            if self.payload_left == 0 {
                self.header_len = 0;
                if let Some(p) = self.goaway.take() {
                    if p.len() >= 8 {
                        done.push(Goaway {
                            last_stream_id: u32::from_be_bytes([p[0], p[1], p[2], p[3]])
                                & 0x7fff_ffff,
                            error_code: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                            debug_data: String::from_utf8_lossy(&p[8..]).into_owned(),
                        });
                    }
                }
            }
        }
        done
    }
}

/// HTTP/2's name for an error code (RFC 9113 §7).
pub fn error_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "unknown error code",
    }
}

fn log(peer: Option<SocketAddr>, g: &Goaway) {
    if g.error_code == 0 {
        return; // a graceful close (shutdown, idle)
    }
    let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
    let what = if g.error_code == 0xb {
        "closing a client connection for flooding the server"
    } else {
        "closing a client connection that broke HTTP/2's rules"
    };
    tracing::warn!(
        client = %peer,
        error = error_name(g.error_code),
        reason = %g.debug_data,
        last_stream_id = g.last_stream_id,
        "{what}: every request on it fails"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn goaway(code: u32, debug: &[u8]) -> Vec<u8> {
        let mut p = 5u32.to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(debug);
        frame(GOAWAY, 0, &p)
    }

    fn http2() -> GoawaySniffer {
        let mut s = GoawaySniffer::new(None);
        s.read(&PREFACE[..5]);
        s.read(&PREFACE[5..]);
        s
    }

    /// Frames split at every byte boundary: the GOAWAY is found after any other frames.
    #[test]
    fn finds_a_goaway_after_other_frames_however_the_writes_split() {
        let mut bytes = frame(0x4, 0, &[0; 12]); // SETTINGS
        bytes.extend(frame(0x0, 1, &vec![7; 70_000 % 16_384])); // DATA
        bytes.extend(frame(0x1, 3, &[0x88])); // HEADERS
        bytes.extend(goaway(0xb, b"too_many_resets"));
        let want = Goaway {
            last_stream_id: 5,
            error_code: 0xb,
            debug_data: "too_many_resets".into(),
        };
        for split in 0..bytes.len() {
            let mut s = http2();
            let mut got = s.frames(&bytes[..split]);
            got.extend(s.frames(&bytes[split..]));
            assert_eq!(got, vec![want.clone()], "split at {split}");
        }
        let mut s = http2();
        let got: Vec<_> = bytes.iter().flat_map(|b| s.frames(&[*b])).collect();
        assert_eq!(got, vec![want]);
    }

    /// A frame whose payload holds GOAWAY's type byte is not taken for one.
    #[test]
    fn reads_only_frame_headers() {
        let mut s = http2();
        let data = frame(0x0, 1, &goaway(0xb, b"x"));
        assert!(s.frames(&data).is_empty());
        assert_eq!(s.frames(&goaway(0x1, b"")).len(), 1);
    }

    #[test]
    fn http1_connections_are_not_followed() {
        let mut s = GoawaySniffer::new(None);
        s.read(b"GET /health HTTP/1.1\r\n\r\n");
        assert!(s.frames(&goaway(0xb, b"x")).is_empty());
        // The server writing before the client's preface is HTTP/1's way.
        let mut s = GoawaySniffer::new(None);
        assert!(s.frames(&goaway(0xb, b"x")).is_empty());
        s.read(PREFACE);
        assert!(s.frames(&goaway(0xb, b"x")).is_empty());
    }
}
