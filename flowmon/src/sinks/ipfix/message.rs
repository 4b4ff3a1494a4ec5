//! IPFIX messages (RFC 7011, section 3): a 16-byte header (version 10, length, export time,
//! sequence number, observation domain) and sets. flowmon's messages hold either the template
//! set or one data set of one template's records.

use std::{
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use super::template::{TEMPLATE_SET_ID, Templates};

pub const VERSION: u16 = 10;
pub const HEADER_LEN: usize = 16;
pub const SET_HEADER_LEN: usize = 4;
/// What precedes the records of a data message: its header and its one set header.
pub const DATA_HEAD_LEN: usize = HEADER_LEN + SET_HEADER_LEN;

/// Encoded records of one template, back to back: what the sink hands to every collector.
#[derive(Debug)]
pub struct Chunk {
    pub template_id: u16,
    pub record_len: usize,
    pub records: Vec<u8>,
    /// Where the buffer goes back once every collector is done with it.
    pub pool: Option<Arc<BufferPool>>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.put(std::mem::take(&mut self.records));
        }
    }
}

/// Chunk buffers the exporters are done with, for the next chunks: a burst of records is then
/// written into memory already mapped, where a first touch of fresh memory costs a page fault
/// every 20-odd records (as much again as encoding them, on this project's VMs).
#[derive(Debug)]
pub struct BufferPool {
    buffers: Mutex<Vec<Vec<u8>>>,
    most: usize,
}

impl BufferPool {
    /// A pool that keeps at most `most` buffers.
    pub fn new(most: usize) -> Self {
        Self {
            buffers: Mutex::new(Vec::new()),
            most,
        }
    }

    /// An empty buffer of at least `capacity` bytes.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let reused = self.buffers.lock().expect("buffer pool lock").pop();
        match reused {
            Some(mut buffer) => {
                buffer.reserve(capacity);
                buffer
            }
            None => Vec::with_capacity(capacity),
        }
    }

    fn put(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        let mut buffers = self.buffers.lock().expect("buffer pool lock");
        if buffers.len() < self.most {
            buffers.push(buffer);
        }
    }
}

impl Chunk {
    pub fn count(&self) -> usize {
        self.records.len() / self.record_len
    }
}

/// Frames messages of one transport session: its sequence number counts the data records of
/// every message framed so far (RFC 7011: modulo 2^32), and those given up on unsent.
pub struct Framer {
    domain: u32,
    max_len: usize,
    sequence: u32,
}

impl Framer {
    /// Messages of at most `max_len` bytes, in observation domain `domain`.
    pub fn new(domain: u32, max_len: usize) -> Self {
        Self {
            domain,
            max_len,
            sequence: 0,
        }
    }

    /// Appends the template message.
    pub fn templates(&self, templates: &Templates, out: &mut Vec<u8>) {
        self.header(out, HEADER_LEN + templates.set.len());
        out.extend_from_slice(&templates.set);
    }

    /// Appends a message of the first records of `records` (whole records of `chunk`'s
    /// template) that fit; returns how many it holds.
    pub fn data(&mut self, chunk: &Chunk, records: &[u8], out: &mut Vec<u8>) -> usize {
        let count = self.data_head(chunk, records, out);
        out.extend_from_slice(&records[..count * chunk.record_len]);
        count
    }

    /// Appends the message header and set header of a message of the first records of
    /// `records` that fit, [`DATA_HEAD_LEN`] bytes, for a sender that sends the records from
    /// where they are; returns how many the message holds.
    pub fn data_head(&mut self, chunk: &Chunk, records: &[u8], out: &mut Vec<u8>) -> usize {
        let per_message = (self.max_len - DATA_HEAD_LEN) / chunk.record_len;
        let count = (records.len() / chunk.record_len).min(per_message);
        let set_len = SET_HEADER_LEN + count * chunk.record_len;
        self.header(out, HEADER_LEN + set_len);
        out.extend_from_slice(&chunk.template_id.to_be_bytes());
        out.extend_from_slice(&(set_len as u16).to_be_bytes());
        self.skip(count);
        count
    }

    /// The sequence number of the next message.
    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    /// Counts `records` that will not be sent (a collector reads the gap as loss).
    pub fn skip(&mut self, records: usize) {
        self.sequence = self.sequence.wrapping_add(records as u32);
    }

    /// Gives a message framed for an earlier session this one's sequence number and export
    /// time; `records` is how many data records it holds.
    pub fn restamp(&mut self, message: &mut [u8], records: usize) {
        message[4..8].copy_from_slice(&export_time().to_be_bytes());
        message[8..12].copy_from_slice(&self.sequence.to_be_bytes());
        self.skip(records);
    }

    fn header(&self, out: &mut Vec<u8>, len: usize) {
        debug_assert!(len <= self.max_len);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&export_time().to_be_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.domain.to_be_bytes());
    }
}

/// Now, in seconds since the epoch (the header's 32 bits last until 2106).
fn export_time() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// What the start of a message tells: its sequence number, and how many data records it holds
/// (whole records of the template its first set names; `None` for a template message).
#[derive(Debug, PartialEq, Eq)]
pub struct Quoted {
    pub sequence: u32,
    pub records: Option<usize>,
}

/// Reads the header and first set header of one of flowmon's messages, e.g. as an ICMP
/// error quotes it; `None` when it is not one.
pub fn quoted(message: &[u8], templates: &Templates) -> Option<Quoted> {
    let header = message.get(..HEADER_LEN + SET_HEADER_LEN)?;
    if u16::from_be_bytes([header[0], header[1]]) != VERSION {
        return None;
    }
    let sequence = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
    let set_id = u16::from_be_bytes([header[16], header[17]]);
    let set_len = u16::from_be_bytes([header[18], header[19]]) as usize;
    let records = match set_id {
        TEMPLATE_SET_ID => None,
        id => {
            let template = templates.by_id(id)?;
            Some(set_len.saturating_sub(SET_HEADER_LEN) / template.record_len)
        }
    };
    Some(Quoted { sequence, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(records: usize) -> Chunk {
        Chunk {
            template_id: 256,
            record_len: 100,
            records: (0..records * 100).map(|i| (i / 100) as u8).collect(),
            pool: None,
        }
    }

    fn be16(bytes: &[u8]) -> usize {
        u16::from_be_bytes([bytes[0], bytes[1]]) as usize
    }

    fn be32(bytes: &[u8]) -> u32 {
        u32::from_be_bytes(bytes[..4].try_into().unwrap())
    }

    #[test]
    fn data_messages_hold_what_fits_and_number_the_records_before_them() {
        // 1,400 bytes: 20 of headers, 13 records of 100.
        let mut framer = Framer::new(9, 1400);
        let chunk = chunk(30);
        let (mut rest, mut messages) = (&chunk.records[..], Vec::new());
        while !rest.is_empty() {
            let mut out = Vec::new();
            let count = framer.data(&chunk, rest, &mut out);
            rest = &rest[count * 100..];
            messages.push(out);
        }
        let lens: Vec<usize> = messages.iter().map(|m| m.len()).collect();
        assert_eq!(lens, [1320, 1320, 420]);
        let sequences: Vec<u32> = messages.iter().map(|m| be32(&m[8..])).collect();
        assert_eq!(sequences, [0, 13, 26]);
        for message in &messages {
            assert_eq!(be16(message), 10);
            assert_eq!(be16(&message[2..]), message.len());
            assert_eq!(be32(&message[12..]), 9, "observation domain");
            assert_eq!(be16(&message[16..]), 256);
            assert_eq!(be16(&message[18..]), message.len() - 16);
        }
        // The third message starts with record 26.
        assert_eq!(messages[2][20], 26);
        // A skip is a gap in the numbers; a restamp takes the next one.
        framer.skip(5);
        let mut old = messages[0].clone();
        framer.restamp(&mut old, 13);
        assert_eq!(be32(&old[8..]), 35);
        let mut next = Vec::new();
        framer.data(&chunk, &chunk.records[..100], &mut next);
        assert_eq!(be32(&next[8..]), 48);
    }

    #[test]
    fn the_template_message_does_not_count_as_records() {
        let templates = Templates::new(4, 32473);
        let mut framer = Framer::new(1, 1400);
        framer.skip(7);
        let mut out = Vec::new();
        framer.templates(&templates, &mut out);
        assert_eq!(be16(&out[2..]), out.len());
        assert_eq!(be32(&out[8..]), 7);
        assert_eq!(&out[16..], &templates.set[..]);
        assert_eq!(
            quoted(&out, &templates),
            Some(Quoted {
                sequence: 7,
                records: None
            })
        );
        let data = Chunk {
            template_id: 257,
            record_len: templates.v6.record_len,
            records: vec![0; 3 * templates.v6.record_len],
            pool: None,
        };
        let mut out = Vec::new();
        assert_eq!(framer.data(&data, &data.records, &mut out), 3);
        assert_eq!(
            quoted(&out, &templates),
            Some(Quoted {
                sequence: 7,
                records: Some(3)
            })
        );
        assert_eq!(quoted(&out[..19], &templates), None);
        out[1] = 9;
        assert_eq!(quoted(&out, &templates), None, "not IPFIX");
    }
}
