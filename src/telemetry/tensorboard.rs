//! TensorBoard event files: the run's events as TensorBoard reads them, for people who live in
//! `tensorboard --logdir`. Two writers share one mapping (`ScalarMap`, event → tagged scalars):
//! `export_run` turns a recorded run (`metrics.jsonl`, `config.toml`) into one file, written
//! atomically; `EventWriter` over a `File` is the live sink of `cptlab run --tensorboard DIR`
//! (`engine::Recorder`), one record per event, flushed as it goes.
//!
//! The format is TensorFlow's TFRecord framing — u64 length (LE), masked CRC-32C of the length,
//! the bytes, masked CRC-32C of the bytes — around `tensorflow.Event` protobufs; the first
//! record is the `file_version` event `brain.Event:2`. The few messages needed are declared here
//! with prost's derive (field numbers from tensorflow/core/util/event.proto and
//! framework/summary.proto), so no protoc and no generated code.
//!
//! Tags (step = the global optimizer step):
//!
//! | tag | from |
//! |---|---|
//! | `train/loss`, `train/lr`, `train/grad_norm` | step events (means over a `log_every` window; lr the last) |
//! | `throughput/images_per_sec` | step events |
//! | `time/data`, `time/fwd`, `time/bwd`, `time/comm`, `time/opt` | step events: seconds per step |
//! | `precision/q_fwd`, `precision/q_bwd`, `precision/loss_scale` | step events, when present |
//! | `precision/skipped_steps` | fp16 step events: skipped updates so far (cumulative) |
//! | `cost/gbitops` | step events: effective GBitOps so far (cumulative) |
//! | `test/loss`, `test/accuracy`, `train/epoch_loss`, `time/epoch_seconds` | eval events |
//! | `config` (text) | the resolved `config.toml`, as a TOML code block |
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use super::store::{self, CONFIG_FILE};
use super::Event;
use crate::files;

/// The first record of every event file: TensorBoard checks it to know the format.
pub const FILE_VERSION: &str = "brain.Event:2";
/// The tag of the config text.
pub const CONFIG_TAG: &str = "config";
/// Where `runs export --format tensorboard` writes by default, inside the run directory.
pub const EXPORT_DIR: &str = "tensorboard";

/// The protobuf messages TensorBoard reads, only the fields written here (field numbers as in
/// TensorFlow's `.proto` files; a `oneof` is plain optional fields on the wire).
pub mod proto {
    /// `tensorflow.Event`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        #[prost(int64, tag = "2")]
        pub step: i64,
        #[prost(string, optional, tag = "3")]
        pub file_version: Option<String>,
        #[prost(message, optional, tag = "5")]
        pub summary: Option<Summary>,
        #[prost(message, optional, tag = "7")]
        pub session_log: Option<SessionLog>,
    }

    /// `tensorflow.SessionLog`: a `START` at step `s` tells TensorBoard to drop what earlier
    /// files recorded at steps `>= s` (a resumed run redoes them).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SessionLog {
        /// `SessionStatus`: 1 is `START`.
        #[prost(int32, tag = "1")]
        pub status: i32,
        #[prost(string, tag = "3")]
        pub msg: String,
    }

    /// `tensorflow.Summary`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<Value>,
    }

    /// `tensorflow.Summary.Value`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(string, tag = "1")]
        pub tag: String,
        #[prost(float, optional, tag = "2")]
        pub simple_value: Option<f32>,
        #[prost(message, optional, tag = "8")]
        pub tensor: Option<TensorProto>,
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<SummaryMetadata>,
    }

    /// `tensorflow.SummaryMetadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SummaryMetadata {
        #[prost(message, optional, tag = "1")]
        pub plugin_data: Option<PluginData>,
        /// `DataClass`: 2 is `DATA_CLASS_TENSOR`.
        #[prost(int32, tag = "4")]
        pub data_class: i32,
    }

    /// `tensorflow.SummaryMetadata.PluginData`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PluginData {
        #[prost(string, tag = "1")]
        pub plugin_name: String,
        #[prost(bytes = "vec", tag = "2")]
        pub content: Vec<u8>,
    }

    /// `tensorflow.TensorProto`, for a string tensor.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        /// `DataType`: 7 is `DT_STRING`.
        #[prost(int32, tag = "1")]
        pub dtype: i32,
        #[prost(message, optional, tag = "2")]
        pub tensor_shape: Option<TensorShapeProto>,
        #[prost(bytes = "vec", repeated, tag = "8")]
        pub string_val: Vec<Vec<u8>>,
    }

    /// `tensorflow.TensorShapeProto` (no dimensions: a scalar).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {}
}

const DT_STRING: i32 = 7;
const SESSION_START: i32 = 1;
const DATA_CLASS_TENSOR: i32 = 2;

/// CRC-32C as TFRecord stores it: rotated and offset, so that a CRC of data holding CRCs stays
/// well distributed.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends one TFRecord (length, its CRC, `data`, its CRC) to `out`.
pub fn frame_record(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// Why bytes are not a sequence of intact TFRecords; offsets count from the file's start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record at byte {offset}: the file ends inside it (a torn write)")]
    Truncated { offset: usize },
    #[error("record at byte {offset}: the length's checksum does not match (corrupt)")]
    LengthChecksum { offset: usize },
    #[error("record at byte {offset}: the data's checksum does not match (corrupt)")]
    DataChecksum { offset: usize },
}

/// Splits TFRecord bytes into their records, checking both checksums of each.
pub fn read_records(bytes: &[u8]) -> Result<Vec<&[u8]>, RecordError> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let offset = at;
        let header = bytes
            .get(at..at + 12)
            .ok_or(RecordError::Truncated { offset })?;
        let (len_bytes, len_crc) = header.split_at(8);
        if masked_crc32c(len_bytes).to_le_bytes() != len_crc {
            return Err(RecordError::LengthChecksum { offset });
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| (at + 12).checked_add(l))
            .filter(|&e| e + 4 <= bytes.len())
            .ok_or(RecordError::Truncated { offset })?;
        let data = &bytes[at + 12..end];
        if masked_crc32c(data).to_le_bytes() != bytes[end..end + 4] {
            return Err(RecordError::DataChecksum { offset });
        }
        records.push(data);
        at = end + 4;
    }
    Ok(records)
}

/// One scalar point: a tag's value at a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub tag: &'static str,
    pub step: u64,
    pub value: f64,
}

/// The one mapping from events to TensorBoard scalars, used by the export and the live sink.
/// It keeps the running totals (GBitOps, skipped steps) that TensorBoard shows cumulatively.
#[derive(Debug, Clone, Default)]
pub struct ScalarMap {
    gbitops: f64,
    skipped: u64,
}

impl ScalarMap {
    /// The scalars of `event` (none for events without numbers: started, log, checkpoint,
    /// ending). Non-finite values (an overflowed fp16 step's gradient norm) are left out:
    /// `metrics.jsonl` records them as null, and the live file shows what an export shows.
    pub fn scalars(&mut self, event: &Event) -> Vec<Scalar> {
        let mut out = self.all_scalars(event);
        out.retain(|s| s.value.is_finite());
        out
    }

    fn all_scalars(&mut self, event: &Event) -> Vec<Scalar> {
        let mut out = Vec::new();
        match event {
            Event::Step(s) => {
                let mut put = |tag, value| {
                    out.push(Scalar {
                        tag,
                        step: s.step,
                        value,
                    })
                };
                put("train/loss", s.loss);
                put("train/lr", s.lr);
                if let Some(g) = s.grad_norm {
                    put("train/grad_norm", g);
                }
                put("throughput/images_per_sec", s.images_per_sec);
                put("time/data", s.t_data);
                put("time/fwd", s.t_fwd);
                put("time/bwd", s.t_bwd);
                put("time/comm", s.t_comm);
                put("time/opt", s.t_opt);
                if let Some(q) = s.q_fwd {
                    put("precision/q_fwd", f64::from(q));
                }
                if let Some(q) = s.q_bwd {
                    put("precision/q_bwd", f64::from(q));
                }
                if let Some(x) = s.loss_scale {
                    put("precision/loss_scale", x);
                }
                // Older builds wrote only `skipped` (one step per event).
                if s.skipped_steps.is_some() || s.skipped.is_some() {
                    self.skipped += s
                        .skipped_steps
                        .unwrap_or(u64::from(s.skipped == Some(true)));
                    put("precision/skipped_steps", self.skipped as f64);
                }
                if let Some(g) = s.gbitops {
                    self.gbitops += g;
                    put("cost/gbitops", self.gbitops);
                }
            }
            Event::Eval(e) => {
                let mut put = |tag, value| {
                    out.push(Scalar {
                        tag,
                        step: e.step,
                        value,
                    })
                };
                put("test/loss", e.test_loss);
                put("test/accuracy", e.test_acc);
                put("train/epoch_loss", e.train_loss);
                put("time/epoch_seconds", e.epoch_seconds);
            }
            Event::Started(_)
            | Event::Checkpoint { .. }
            | Event::Log { .. }
            | Event::Finished { .. }
            | Event::Failed { .. } => {}
        }
        out
    }
}

/// Seconds since the Unix epoch, as TensorBoard's `wall_time`.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The config as TensorBoard's text plugin shows it: Markdown, so a TOML code block.
fn config_markdown(config_toml: &str) -> String {
    format!("```toml\n{}\n```", config_toml.trim_end())
}

/// Writes TensorBoard events into `out`, one record per `write_*` call (a single `write_all`,
/// then `flush`: a live file is readable up to its last event).
pub struct EventWriter<W: Write> {
    out: W,
    map: ScalarMap,
    buf: Vec<u8>,
}

impl<W: Write> EventWriter<W> {
    /// Starts the file with its `file_version` record.
    pub fn new(out: W, wall_time: f64) -> io::Result<EventWriter<W>> {
        let mut w = EventWriter {
            out,
            map: ScalarMap::default(),
            buf: Vec::new(),
        };
        w.write_proto(&proto::Event {
            wall_time,
            step: 0,
            file_version: Some(FILE_VERSION.into()),
            ..Default::default()
        })?;
        Ok(w)
    }

    fn write_proto(&mut self, event: &proto::Event) -> io::Result<()> {
        use prost::Message;
        self.buf.clear();
        frame_record(&event.encode_to_vec(), &mut self.buf);
        self.out.write_all(&self.buf)?;
        self.out.flush()
    }

    /// The scalars of `event` at `wall_time`, as one record (nothing for events without numbers).
    pub fn write_event(&mut self, event: &Event, wall_time: f64) -> io::Result<()> {
        let scalars = self.map.scalars(event);
        let Some(step) = scalars.first().map(|s| s.step) else {
            return Ok(());
        };
        let value = scalars
            .into_iter()
            .map(|s| proto::Value {
                tag: s.tag.into(),
                simple_value: Some(s.value as f32),
                tensor: None,
                metadata: None,
            })
            .collect();
        self.write_proto(&proto::Event {
            wall_time,
            step: i64::try_from(step).unwrap_or(i64::MAX),
            summary: Some(proto::Summary { value }),
            ..Default::default()
        })
    }

    /// Advances the running totals past `event` without writing it (a resumed run's earlier
    /// steps, already in an earlier file).
    pub fn skip_event(&mut self, event: &Event) {
        self.map.scalars(event);
    }

    /// The resolved config as a text summary under `CONFIG_TAG`.
    pub fn write_config(&mut self, config_toml: &str, step: u64, wall_time: f64) -> io::Result<()> {
        let value = proto::Value {
            tag: CONFIG_TAG.into(),
            simple_value: None,
            tensor: Some(proto::TensorProto {
                dtype: DT_STRING,
                tensor_shape: Some(proto::TensorShapeProto {}),
                string_val: vec![config_markdown(config_toml).into_bytes()],
            }),
            metadata: Some(proto::SummaryMetadata {
                plugin_data: Some(proto::PluginData {
                    plugin_name: "text".into(),
                    // An empty TextPluginData (version 0).
                    content: Vec::new(),
                }),
                data_class: DATA_CLASS_TENSOR,
            }),
        };
        self.write_proto(&proto::Event {
            wall_time,
            step: i64::try_from(step).unwrap_or(i64::MAX),
            summary: Some(proto::Summary { value: vec![value] }),
            ..Default::default()
        })
    }

    /// A session restart at `step`: TensorBoard forgets what earlier files hold from `step` on.
    pub fn write_session_start(&mut self, step: u64, wall_time: f64, msg: &str) -> io::Result<()> {
        self.write_proto(&proto::Event {
            wall_time,
            step: i64::try_from(step).unwrap_or(i64::MAX),
            session_log: Some(proto::SessionLog {
                status: SESSION_START,
                msg: msg.into(),
            }),
            ..Default::default()
        })
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// This machine's name for event file names (TensorBoard's `<host>` part), without dots, which
/// would read as more fields.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// TensorBoard's file name, `events.out.tfevents.<secs>.<host>.<tail>.cptlab` (`tfevents` in
/// the name is what `--logdir` looks for; files sort by time).
pub fn event_file_name(secs: u64, tail: &str) -> String {
    format!("events.out.tfevents.{secs}.{}.{tail}.cptlab", host_name())
}

/// The seconds for a new file's name: now, or later than every event file already in `dir`.
/// TensorBoard reads a directory's files in name order, so a resumed session's file (maybe
/// started within the same second, by a process with a smaller pid) comes after the one before.
fn name_seconds(dir: &Path, now: u64) -> u64 {
    let latest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let secs = name.to_str()?.strip_prefix("events.out.tfevents.")?;
            secs.split('.').next()?.parse::<u64>().ok()
        })
        .max();
    latest.map_or(now, |l| now.max(l.saturating_add(1)))
}

/// A new live event file in `dir` (created if missing), named after now and this process.
pub fn create_live(dir: &Path) -> Result<(EventWriter<std::fs::File>, PathBuf)> {
    files::create_dir_all(dir)?;
    let now = unix_seconds(SystemTime::now());
    let name = event_file_name(
        name_seconds(dir, now as u64),
        &std::process::id().to_string(),
    );
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| files::FileError::new("create", &path, e))?;
    let w = EventWriter::new(file, now).map_err(|e| files::FileError::new("write", &path, e))?;
    Ok((w, path))
}

/// Wall times for recorded events, which carry no clock: the run's start plus the training
/// time the events account for (each epoch's measured seconds, and within an epoch the steps'
/// timings), never going back.
struct RecordedClock {
    start: f64,
    epochs: f64,
    in_epoch: f64,
    last: f64,
}

impl RecordedClock {
    fn at(&mut self, event: &Event) -> f64 {
        match event {
            Event::Step(s) => {
                let per_step = s.t_data + s.t_fwd + s.t_bwd + s.t_comm + s.t_opt;
                self.in_epoch += per_step * s.steps.unwrap_or(1) as f64;
            }
            Event::Eval(e) => {
                self.epochs += e.epoch_seconds;
                self.in_epoch = 0.0;
            }
            _ => {}
        }
        let t = self.start + self.epochs + self.in_epoch;
        if t.is_finite() && t > self.last {
            self.last = t;
        }
        self.last
    }
}

/// When a recorded run started: its directory's creation (or, where the file system does not
/// keep it, `config.toml`'s last change).
fn run_start(dir: &Path) -> f64 {
    let created = std::fs::metadata(dir).and_then(|m| m.created());
    let changed = || std::fs::metadata(dir.join(CONFIG_FILE)).and_then(|m| m.modified());
    created.or_else(|_| changed()).map_or(0.0, unix_seconds)
}

/// The event file of a recorded run: the config text at step 0, then every event's scalars.
pub fn export_bytes(events: &[Event], config_toml: &str, start: f64) -> Vec<u8> {
    let mut clock = RecordedClock {
        start,
        epochs: 0.0,
        in_epoch: 0.0,
        last: start,
    };
    // Writing into memory cannot fail.
    let mut w = EventWriter::new(Vec::new(), start).expect("writing to memory");
    w.write_config(config_toml, 0, start)
        .expect("writing to memory");
    for e in events {
        let t = clock.at(e);
        w.write_event(e, t).expect("writing to memory");
    }
    w.into_inner()
}

/// `runs export --format tensorboard`: the run in `run_dir` as one event file in `out_dir`
/// (default `<run dir>/tensorboard/`), written atomically. Its name depends only on the run, so
/// exporting again replaces the earlier export. Returns the file's path.
pub fn export_run(run_dir: &Path, out_dir: Option<&Path>) -> Result<PathBuf> {
    let events = store::read_metrics(run_dir)?;
    let config = store::read_config_text(run_dir)?;
    let start = run_start(run_dir);
    let bytes = export_bytes(&events, &config, start);
    let dir = out_dir.map_or_else(|| run_dir.join(EXPORT_DIR), Path::to_path_buf);
    files::create_dir_all(&dir)?;
    let path = dir.join(event_file_name(start as u64, "export"));
    files::write_atomic(&path, &bytes)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{EvalEvent, StepEvent};
    use prost::Message;

    fn step(step: u64, gbitops: Option<f64>) -> Event {
        Event::Step(StepEvent {
            step,
            epoch: 1,
            loss: 2.0 / step as f64,
            lr: 0.1,
            images_per_sec: 1000.0,
            grad_norm: None,
            t_data: 0.001,
            t_fwd: 0.002,
            t_bwd: 0.003,
            t_comm: 0.0,
            t_opt: 0.0005,
            q_fwd: Some(4),
            q_bwd: Some(8),
            gbitops,
            loss_scale: None,
            skipped: None,
            steps: Some(2),
            skipped_steps: None,
            peak_memory_bytes: None,
            peak_memory_kind: None,
        })
    }

    /// The CRC-32C check value of the standard catalogue ("123456789"), and TFRecord's mask of
    /// it worked out by hand: rotate right by 15, add 0xa282ead8.
    #[test]
    fn crc32c_and_its_mask_match_the_known_vectors() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // 0xE3069283 rotated right by 15 is 0x2507C60D (its low 15 bits move to the top).
        assert_eq!(
            masked_crc32c(b"123456789"),
            0x2507_C60Du32.wrapping_add(0xa282_ead8)
        );
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn a_record_is_length_crc_data_crc() {
        let mut out = Vec::new();
        frame_record(b"abc", &mut out);
        assert_eq!(out.len(), 8 + 4 + 3 + 4);
        assert_eq!(&out[..8], &3u64.to_le_bytes());
        assert_eq!(
            &out[8..12],
            &masked_crc32c(&3u64.to_le_bytes()).to_le_bytes()
        );
        assert_eq!(&out[12..15], b"abc");
        assert_eq!(&out[15..], &masked_crc32c(b"abc").to_le_bytes());
        assert_eq!(read_records(&out).unwrap(), vec![&b"abc"[..]]);
    }

    #[test]
    fn corrupt_or_torn_records_are_detected() {
        let mut out = Vec::new();
        frame_record(b"first", &mut out);
        let second = out.len();
        frame_record(b"second record", &mut out);
        assert_eq!(read_records(&out).unwrap().len(), 2);
        // One flipped bit in the second record's data.
        let mut bad = out.clone();
        bad[second + 12 + 3] ^= 0x10;
        assert_eq!(
            read_records(&bad),
            Err(RecordError::DataChecksum { offset: second })
        );
        // One flipped bit in its length.
        let mut bad = out.clone();
        bad[second] ^= 0x01;
        assert_eq!(
            read_records(&bad),
            Err(RecordError::LengthChecksum { offset: second })
        );
        // Cut off before its end.
        assert_eq!(
            read_records(&out[..out.len() - 1]),
            Err(RecordError::Truncated { offset: second })
        );
    }

    #[test]
    fn non_finite_values_are_left_out_as_metrics_jsonl_leaves_them_out() {
        let Event::Step(mut s) = step(1, Some(1.0)) else {
            unreachable!()
        };
        s.grad_norm = Some(f64::INFINITY);
        s.loss_scale = Some(f64::NAN);
        let tags: Vec<&str> = ScalarMap::default()
            .scalars(&Event::Step(s))
            .iter()
            .map(|s| s.tag)
            .collect();
        assert!(tags.contains(&"train/loss"), "{tags:?}");
        assert!(!tags.contains(&"train/grad_norm"), "{tags:?}");
        assert!(!tags.contains(&"precision/loss_scale"), "{tags:?}");
    }

    #[test]
    fn the_file_starts_with_its_version_and_scalars_decode_back() {
        let events = vec![
            step(2, Some(1.5)),
            step(4, Some(2.5)),
            Event::Eval(EvalEvent {
                epoch: 1,
                step: 4,
                test_loss: 0.75,
                test_acc: 0.625,
                train_loss: 1.0,
                epoch_seconds: 3.0,
            }),
        ];
        let bytes = export_bytes(&events, "name = \"x\"\n", 1000.0);
        let records = read_records(&bytes).unwrap();
        let decoded: Vec<proto::Event> = records
            .iter()
            .map(|r| proto::Event::decode(*r).unwrap())
            .collect();
        assert_eq!(decoded[0].file_version.as_deref(), Some(FILE_VERSION));
        let text = &decoded[1].summary.as_ref().unwrap().value[0];
        assert_eq!(text.tag, CONFIG_TAG);
        let s = &text.tensor.as_ref().unwrap().string_val[0];
        assert!(String::from_utf8_lossy(s).contains("name = \"x\""));
        let value = |e: &proto::Event, tag: &str| {
            e.summary
                .as_ref()
                .unwrap()
                .value
                .iter()
                .find(|v| v.tag == tag)
                .and_then(|v| v.simple_value)
        };
        assert_eq!(decoded[2].step, 2);
        assert_eq!(value(&decoded[2], "train/loss"), Some(1.0));
        assert_eq!(value(&decoded[2], "precision/q_fwd"), Some(4.0));
        // GBitOps add up.
        assert_eq!(value(&decoded[3], "cost/gbitops"), Some(4.0));
        assert_eq!(value(&decoded[4], "test/accuracy"), Some(0.625));
        // Two steps of 6.5 ms each per event; the eval sets the clock to the epoch's seconds.
        assert!((decoded[2].wall_time - 1000.013).abs() < 1e-9);
        assert!((decoded[3].wall_time - 1000.026).abs() < 1e-9);
        assert_eq!(decoded[4].wall_time, 1003.0);
    }
}
