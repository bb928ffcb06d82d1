//! libtorch's error messages without their C++ backtraces.
//!
//! A `c10::Error` carries "Exception raised from <function> at <file>:<line> (most recent call
//! first):" and dozens of `frame #N: … (0x7f… in libtorch_cpu.so)` lines. tch passes them on in
//! `TchError::Torch` ("Internal torch error: …"), and its panicking wrappers put the same text,
//! escaped, in a panic message (`called `Result::unwrap()` on an `Err` value: Torch("…\n…")`).
//! [`clean`] keeps what a user can act on: the message lines before the trace.

/// The meaningful part of a libtorch error (or of a panic message holding one): the lines
/// before "Exception raised from" / "frame #N", without tch's wrappers, joined by spaces.
pub fn clean(msg: &str) -> String {
    let mut text = msg.trim().to_string();
    // A panic from tch's `unwrap()`: the error's Debug form, with escaped newlines and quotes.
    if let Some(i) = text.find("Torch(\"") {
        let prefix = text[..i]
            .trim_end()
            .trim_end_matches("called `Result::unwrap()` on an `Err` value:")
            .trim_end()
            .to_string();
        let inner = text[i + "Torch(\"".len()..]
            .trim_end()
            .trim_end_matches("\")")
            .replace("\\n", "\n")
            .replace("\\\"", "\"")
            .replace("\\'", "'");
        text = if prefix.is_empty() {
            inner
        } else {
            format!("{prefix} {inner}")
        };
    }
    let mut kept: Vec<&str> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Exception raised from") || is_frame(t) {
            break;
        }
        // A trace glued to a message line: keep the part before it.
        let t = match t.find("Exception raised from") {
            Some(i) => t[..i].trim(),
            None => t,
        };
        let t = t.trim_start_matches("Internal torch error:").trim();
        if !t.is_empty() {
            kept.push(t);
        }
    }
    if kept.is_empty() {
        return "libtorch error (no message)".into();
    }
    kept.join(" ")
}

fn is_frame(line: &str) -> bool {
    line.strip_prefix("frame #")
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "PytorchStreamReader failed reading zip archive: failed finding central directory
Exception raised from valid at /pytorch/caffe2/serialize/inline_container.cc:232 (most recent call first):
frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x98 (0x7f0 in /x/libc10.so)
frame #1: <unknown function> + 0x3f (0x7f1 in /x/libtorch_cpu.so)
";

    #[test]
    fn keeps_the_message_and_drops_the_trace() {
        let want =
            "PytorchStreamReader failed reading zip archive: failed finding central directory";
        assert_eq!(clean(TRACE), want);
        assert_eq!(clean(&format!("Internal torch error: {TRACE}")), want);
        let panic = format!(
            "called `Result::unwrap()` on an `Err` value: Torch({:?})",
            TRACE
        );
        assert_eq!(clean(&panic), want);
        assert_eq!(clean("plain message"), "plain message");
        assert_eq!(
            clean("a\nb\nframe #0: f"),
            "a b",
            "every message line before the trace is kept"
        );
        assert_eq!(clean("frame #0: f"), "libtorch error (no message)");
    }
}
