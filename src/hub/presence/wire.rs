//! Presence messages between processes, as they travel on a broker's live channel (the one
//! [`Hub::send_to`](crate::hub::Hub::send_to) uses). Decoding is strict and bounded: a message
//! is read whole or refused, never half applied, and nothing in it can panic the reader.
//!
//! ```text
//! message  = kind from seq *field
//! kind     = "H" (heartbeat) / "J" (join) / "L" (leave) / "S" (a part of a snapshot)
//!          / "Q" (a request for snapshots)
//! from     = str                      ; the sending process's id
//! seq      = str                      ; decimal: how many changes that process has made
//! str      = len ":" bytes            ; len: decimal, no leading zero, at most 7 digits
//! H: nothing more                     J: member space key meta      L: member
//! S: part last("0"/"1") *(member space key meta)                    Q: target ("": every process)
//! ```
#![cfg_attr(not(feature = "_broker"), allow(dead_code))]

use std::sync::Arc;

use crate::hub::counted;

/// The largest snapshot part a process sends, in bytes: under NATS's default 1 MiB payload.
pub(super) const PART_BYTES: usize = 256 * 1024;

/// One member as a message carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Wired {
    /// The member's number within its process.
    pub(super) member: u64,
    pub(super) space: Arc<str>,
    pub(super) key: Arc<str>,
    pub(super) meta: Arc<str>,
}

/// A presence message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Message {
    /// "I am alive, and have made `seq` changes."
    Heartbeat,
    Join(Wired),
    Leave(u64),
    /// Part `part` of the sender's members at `seq` (`last`: the final part).
    Snapshot {
        part: u64,
        last: bool,
        members: Vec<Wired>,
    },
    /// "Send me your snapshot" (`target`: one process, or every process when empty).
    Query(Arc<str>),
}

/// A message with its sender and the sender's change count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Envelope {
    pub(super) from: Arc<str>,
    pub(super) seq: u64,
    pub(super) message: Message,
}

fn put_member(out: &mut Vec<u8>, wired: &Wired) {
    counted::write(out, wired.member.to_string().as_bytes());
    counted::write(out, wired.space.as_bytes());
    counted::write(out, wired.key.as_bytes());
    counted::write(out, wired.meta.as_bytes());
}

impl Envelope {
    /// The message's bytes.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(match self.message {
            Message::Heartbeat => b'H',
            Message::Join(_) => b'J',
            Message::Leave(_) => b'L',
            Message::Snapshot { .. } => b'S',
            Message::Query(_) => b'Q',
        });
        counted::write(&mut out, self.from.as_bytes());
        counted::write(&mut out, self.seq.to_string().as_bytes());
        match &self.message {
            Message::Heartbeat => {}
            Message::Join(wired) => put_member(&mut out, wired),
            Message::Leave(member) => counted::write(&mut out, member.to_string().as_bytes()),
            Message::Snapshot {
                part,
                last,
                members,
            } => {
                counted::write(&mut out, part.to_string().as_bytes());
                counted::write(&mut out, if *last { b"1" } else { b"0" });
                for wired in members {
                    put_member(&mut out, wired);
                }
            }
            Message::Query(target) => counted::write(&mut out, target.as_bytes()),
        }
        out
    }

    /// Reads a message (strictly: anything else is `None`).
    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        let (&kind, rest) = bytes.split_first()?;
        let mut reader = Reader { rest };
        let from: Arc<str> = reader.text()?.into();
        let seq = reader.number()?;
        let message = match kind {
            b'H' => Message::Heartbeat,
            b'J' => Message::Join(reader.member()?),
            b'L' => Message::Leave(reader.number()?),
            b'S' => {
                let part = reader.number()?;
                let last = match reader.field()? {
                    b"0" => false,
                    b"1" => true,
                    _ => return None,
                };
                let mut members = Vec::new();
                while !reader.rest.is_empty() {
                    members.push(reader.member()?);
                }
                Message::Snapshot {
                    part,
                    last,
                    members,
                }
            }
            b'Q' => Message::Query(reader.text()?.into()),
            _ => return None,
        };
        reader
            .rest
            .is_empty()
            .then_some(Self { from, seq, message })
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn field(&mut self) -> Option<&'a [u8]> {
        let (field, rest) = counted::read(self.rest, 7)?;
        self.rest = rest;
        Some(field)
    }

    fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.field()?).ok()
    }

    fn number(&mut self) -> Option<u64> {
        let text = self.text()?;
        if text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
            return None;
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    }

    fn member(&mut self) -> Option<Wired> {
        Some(Wired {
            member: self.number()?,
            space: self.text()?.into(),
            key: self.text()?.into(),
            meta: self.text()?.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wired(member: u64, key: &str) -> Wired {
        Wired {
            member,
            space: "room/1".into(),
            key: key.into(),
            meta: "{\"a\":\"b:c\"}".into(),
        }
    }

    #[test]
    fn every_message_round_trips() {
        for message in [
            Message::Heartbeat,
            Message::Join(wired(7, "alice")),
            Message::Join(wired(0, "")),
            Message::Leave(7),
            Message::Snapshot {
                part: 0,
                last: true,
                members: vec![],
            },
            Message::Snapshot {
                part: 3,
                last: false,
                members: vec![wired(1, "a"), wired(2, "é\n:")],
            },
            Message::Query("".into()),
            Message::Query("p-1".into()),
        ] {
            let envelope = Envelope {
                from: "node:x".into(),
                seq: 42,
                message,
            };
            let bytes = envelope.encode();
            assert_eq!(Envelope::decode(&bytes), Some(envelope));
        }
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        let good = Envelope {
            from: "n".into(),
            seq: 1,
            message: Message::Leave(2),
        }
        .encode();
        assert_eq!(&good[..], b"L1:n1:11:2");
        for bad in [
            &b""[..],
            b"X1:n1:1",
            b"H1:n",
            b"H1:n1:1trailing",
            b"H1:n01:1",
            b"H1:n1:x",
            b"H1:n2:01",
            b"L1:n1:1",
            b"L1:n1:11:2x",
            b"H9999999999:n1:1",
            b"S1:n1:11:01:2",
            b"J1:n1:11:1",
            b"H1:\xff1:1",
            b"L1:n1:121:99999999999999999999",
        ] {
            assert_eq!(Envelope::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decoding_any_bytes_never_panics() {
        let sample = Envelope {
            from: "node".into(),
            seq: 9,
            message: Message::Snapshot {
                part: 1,
                last: true,
                members: vec![wired(1, "alice"), wired(2, "bob")],
            },
        }
        .encode();
        // Every cut and every single-byte change of a valid message.
        for cut in 0..=sample.len() {
            let _ = Envelope::decode(&sample[..cut]);
        }
        for at in 0..sample.len() {
            for byte in [0, b':', b'0', b'9', 0xff] {
                let mut damaged = sample.clone();
                damaged[at] = byte;
                if let Some(read) = Envelope::decode(&damaged) {
                    assert_eq!(read.encode(), damaged, "one spelling per message");
                }
            }
        }
    }
}
