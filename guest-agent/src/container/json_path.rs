//! Where in a JSON document an error is: serde_json reports a line and a
//! column; a small scanner turns that position into a field path such as
//! `process.capabilities.bounding[2]`, so a bad config.json is answered
//! with the field it got wrong.

/// One open container while scanning.
enum Frame {
    /// An object and the key of the member being read.
    Object(Option<String>),
    /// An array and the index of the element being read.
    Array(usize),
}

/// The field path at `line`/`column` (1-based, as serde_json counts them)
/// of `text`; empty for the document itself.
pub fn path_at(text: &str, line: usize, column: usize) -> String {
    let mut stack: Vec<Frame> = Vec::new();
    let (mut cur_line, mut cur_col) = (1usize, 0usize);
    let mut chars = text.chars().peekable();
    // A string being read: its text and whether it is an object key.
    let mut in_string: Option<(String, bool)> = None;
    let mut expect_key = false;
    while let Some(c) = chars.next() {
        if c == '\n' {
            cur_line += 1;
            cur_col = 0;
        } else {
            cur_col += 1;
        }
        if let Some((s, is_key)) = in_string.as_mut() {
            match c {
                '\\' => {
                    if let Some(e) = chars.next() {
                        cur_col += 1;
                        s.push(e);
                    }
                }
                '"' => {
                    if *is_key {
                        if let Some(Frame::Object(key)) = stack.last_mut() {
                            *key = Some(std::mem::take(s));
                        }
                    }
                    in_string = None;
                }
                _ => s.push(c),
            }
        } else {
            match c {
                '"' => in_string = Some((String::new(), expect_key)),
                '{' => {
                    stack.push(Frame::Object(None));
                    expect_key = true;
                }
                '[' => {
                    stack.push(Frame::Array(0));
                    expect_key = false;
                }
                '}' | ']' => {
                    stack.pop();
                    expect_key = false;
                }
                ':' => expect_key = false,
                ',' => match stack.last_mut() {
                    Some(Frame::Array(i)) => *i += 1,
                    Some(Frame::Object(key)) => {
                        *key = None;
                        expect_key = true;
                    }
                    None => {}
                },
                _ => {}
            }
        }
        if cur_line > line || (cur_line == line && cur_col >= column) {
            break;
        }
    }
    render(&stack)
}

fn render(stack: &[Frame]) -> String {
    let mut out = String::new();
    for frame in stack {
        match frame {
            Frame::Object(Some(key)) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Frame::Object(None) => {}
            Frame::Array(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A serde_json error as `field: what`, without serde's position suffix.
pub fn describe(text: &str, e: &serde_json::Error) -> (String, String) {
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    let path = if e.line() == 0 {
        String::new()
    } else {
        path_at(text, e.line(), e.column())
    };
    (path, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Spec;

    fn spec_error(text: &str) -> (String, String) {
        let e = serde_json::from_str::<Spec>(text).unwrap_err();
        describe(text, &e)
    }

    #[test]
    fn names_the_field_of_a_wrong_type() {
        let text = r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":"root","gid":0}}}"#;
        let (path, msg) = spec_error(text);
        assert_eq!(path, "process.user.uid");
        assert!(msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn names_an_array_element() {
        let text = "{\n \"process\": {\"cwd\": \"/\", \"user\": {},\n  \"args\": [\"sh\", 7]}}";
        let (path, msg) = spec_error(text);
        assert_eq!(path, "process.args[1]");
        assert!(msg.contains("invalid type"), "{msg}");
        // A set's element errors point past the set: the set is named, and
        // the message names the element.
        let text = "{\"process\": {\"cwd\": \"/\", \"user\": {},\n  \"capabilities\": {\"bounding\": [\"CAP_KILL\", \"CAP_FROB\"]}}}";
        let (path, msg) = spec_error(text);
        assert_eq!(path, "process.capabilities.bounding");
        assert!(msg.contains("CAP_FROB"), "{msg}");
    }

    #[test]
    fn names_the_object_of_a_missing_field() {
        let text = r#"{"mounts":[{"destination":"/proc","type":"proc"},{"type":"tmpfs"}]}"#;
        let (path, msg) = spec_error(text);
        assert_eq!(path, "mounts[1]");
        assert!(msg.contains("missing field `destination`"), "{msg}");
    }

    #[test]
    fn keys_with_escapes_and_syntax_errors() {
        assert_eq!(path_at(r#"{"a\"b": [1, {"c": x}]}"#, 1, 20), "a\"b[1].c");
        let text = "{\"root\": {\"path\": \"/r\"},";
        let e = serde_json::from_str::<Spec>(text).unwrap_err();
        let (path, msg) = describe(text, &e);
        assert_eq!(path, "");
        assert!(msg.contains("EOF"), "{msg}");
    }
}
