//! Reading packets for `dvipsecctl esp` and writing its results.
//!
//! Binary input is exactly one raw IP packet. Hex input holds one packet per non-empty line
//! (whitespace and `:` inside a line are ignored), so one run can push several packets through
//! the same SA, which is how replays are shown.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Why input could not be read or output could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PacketIoError {
    /// Reading the input failed.
    #[error("cannot read {source_name}: {cause}")]
    Read {
        /// `stdin` or the file name.
        source_name: String,
        /// The I/O error.
        cause: io::Error,
    },
    /// Writing the output failed.
    #[error("cannot write {sink_name}: {cause}")]
    Write {
        /// `stdout` or the file name.
        sink_name: String,
        /// The I/O error.
        cause: io::Error,
    },
    /// A hex line holds a character that is not a hex digit.
    #[error("{source_name} line {line}: character {column} is not a hex digit")]
    BadHexDigit {
        /// `stdin` or the file name.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// 1-based column of the offending character.
        column: usize,
    },
    /// A hex line has an odd number of digits.
    #[error("{source_name} line {line}: odd number of hex digits ({digits})")]
    OddHexLength {
        /// `stdin` or the file name.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// Number of hex digits found.
        digits: usize,
    },
    /// The input held no packet at all.
    #[error("{source_name} holds no packet")]
    Empty {
        /// `stdin` or the file name.
        source_name: String,
    },
}

/// One input packet and where it came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPacket {
    /// Where the packet starts: `line N` for hex input, `packet` for binary input.
    pub location: String,
    /// The raw IP packet.
    pub bytes: Vec<u8>,
}

/// Reads the packets from `--in FILE` or stdin, as binary or as hex lines.
pub fn read_packets(input: Option<&Path>, hex: bool) -> Result<Vec<InputPacket>, PacketIoError> {
    let source_name = input.map_or_else(|| "stdin".to_owned(), |p| p.display().to_string());
    let raw = read_all(input).map_err(|cause| PacketIoError::Read {
        source_name: source_name.clone(),
        cause,
    })?;
    let packets = if hex {
        parse_hex_lines(&raw, &source_name)?
    } else if raw.is_empty() {
        Vec::new()
    } else {
        vec![InputPacket {
            location: "packet".to_owned(),
            bytes: raw,
        }]
    };
    if packets.is_empty() {
        return Err(PacketIoError::Empty { source_name });
    }
    Ok(packets)
}

fn read_all(input: Option<&Path>) -> io::Result<Vec<u8>> {
    match input {
        Some(path) => fs::read(path),
        None => {
            let mut raw = Vec::new();
            io::stdin().lock().read_to_end(&mut raw)?;
            Ok(raw)
        }
    }
}

/// Parses hex text: one packet per non-empty line; spaces, tabs and `:` are separators.
pub fn parse_hex_lines(raw: &[u8], source_name: &str) -> Result<Vec<InputPacket>, PacketIoError> {
    let mut packets = Vec::new();
    for (index, line) in raw.split(|&b| b == b'\n').enumerate() {
        let line_number = index + 1;
        let bytes = parse_hex_line(line, source_name, line_number)?;
        if !bytes.is_empty() {
            packets.push(InputPacket {
                location: format!("line {line_number}"),
                bytes,
            });
        }
    }
    Ok(packets)
}

fn parse_hex_line(
    line: &[u8],
    source_name: &str,
    line_number: usize,
) -> Result<Vec<u8>, PacketIoError> {
    let mut digits = Vec::with_capacity(line.len());
    for (index, &ch) in line.iter().enumerate() {
        match ch {
            b' ' | b'\t' | b'\r' | b':' => {}
            _ => match hex_value(ch) {
                Some(value) => digits.push(value),
                None => {
                    return Err(PacketIoError::BadHexDigit {
                        source_name: source_name.to_owned(),
                        line: line_number,
                        column: index + 1,
                    })
                }
            },
        }
    }
    if !digits.len().is_multiple_of(2) {
        return Err(PacketIoError::OddHexLength {
            source_name: source_name.to_owned(),
            line: line_number,
            digits: digits.len(),
        });
    }
    Ok(digits
        .chunks_exact(2)
        .map(|pair| (pair[0] << 4) | pair[1])
        .collect())
}

fn hex_value(ch: u8) -> Option<u8> {
    match ch {
        b'0'..=b'9' => Some(ch - b'0'),
        b'a'..=b'f' => Some(ch - b'a' + 10),
        b'A'..=b'F' => Some(ch - b'A' + 10),
        _ => None,
    }
}

/// Where results go: `--out FILE` or stdout. Results are written as they are produced, so the
/// packets before a failing one are still delivered.
pub struct PacketSink {
    name: String,
    writer: Box<dyn Write>,
}

impl PacketSink {
    /// Opens `--out FILE` (created or truncated) or stdout.
    pub fn open(output: Option<&PathBuf>) -> Result<Self, PacketIoError> {
        match output {
            Some(path) => {
                let name = path.display().to_string();
                let file = fs::File::create(path).map_err(|cause| PacketIoError::Write {
                    sink_name: name.clone(),
                    cause,
                })?;
                Ok(Self {
                    name,
                    writer: Box::new(io::BufWriter::new(file)),
                })
            }
            None => Ok(Self {
                name: "stdout".to_owned(),
                writer: Box::new(io::stdout().lock()),
            }),
        }
    }

    /// Writes one packet: raw bytes, or one line of lowercase hex.
    pub fn write_packet(&mut self, packet: &[u8], hex: bool) -> Result<(), PacketIoError> {
        if hex {
            let line = format!("{}\n", hex::encode(packet));
            self.write_bytes(line.as_bytes())
        } else {
            self.write_bytes(packet)
        }
    }

    /// Writes one line of text (peek's JSON).
    pub fn write_line(&mut self, line: &str) -> Result<(), PacketIoError> {
        self.write_bytes(line.as_bytes())?;
        self.write_bytes(b"\n")
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), PacketIoError> {
        self.writer
            .write_all(bytes)
            .map_err(|cause| PacketIoError::Write {
                sink_name: self.name.clone(),
                cause,
            })
    }

    /// Flushes buffered output; call before exiting.
    pub fn finish(mut self) -> Result<(), PacketIoError> {
        self.writer.flush().map_err(|cause| PacketIoError::Write {
            sink_name: self.name.clone(),
            cause,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_lines_become_packets_with_their_line_numbers() {
        let packets = parse_hex_lines(b"45 00\n\nde:ad:BE:EF\r\n", "stdin").unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].bytes, vec![0x45, 0x00]);
        assert_eq!(packets[0].location, "line 1");
        assert_eq!(packets[1].bytes, vec![0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(packets[1].location, "line 3");
    }

    proptest::proptest! {
        #[test]
        fn hex_lines_round_trip_whatever_the_separators(
            packets in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..80), 1..5),
            separator in proptest::sample::select(vec!["", " ", ":", "\t"]),
            upper in proptest::bool::ANY,
        ) {
            let mut text = String::new();
            for packet in &packets {
                let digits: Vec<String> = packet.iter().map(|b| format!("{b:02x}")).collect();
                let line = digits.join(separator);
                text.push_str(&if upper { line.to_uppercase() } else { line });
                text.push_str("\r\n\n");
            }
            let parsed = parse_hex_lines(text.as_bytes(), "stdin").unwrap();
            let bytes: Vec<Vec<u8>> = parsed.into_iter().map(|p| p.bytes).collect();
            proptest::prop_assert_eq!(bytes, packets);
        }

        #[test]
        fn any_input_parses_or_fails_cleanly(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            // Never a panic: either packets (none empty, each located) or an error naming its line.
            match parse_hex_lines(&raw, "stdin") {
                Ok(packets) => {
                    for packet in packets {
                        proptest::prop_assert!(!packet.bytes.is_empty());
                        proptest::prop_assert!(packet.location.starts_with("line "));
                    }
                }
                Err(err) => proptest::prop_assert!(err.to_string().starts_with("stdin line ")),
            }
        }
    }

    #[test]
    fn bad_hex_names_line_and_column() {
        let err = parse_hex_lines(b"4500\n45x0\n", "in.hex").unwrap_err();
        assert_eq!(
            err.to_string(),
            "in.hex line 2: character 3 is not a hex digit"
        );
        let err = parse_hex_lines(b"450\n", "stdin").unwrap_err();
        assert_eq!(
            err.to_string(),
            "stdin line 1: odd number of hex digits (3)"
        );
    }
}
