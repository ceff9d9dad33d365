//! Just enough XML for the stores' small answers (listings, lock configurations): the text
//! of elements by name. The answers are flat and machine-written; no general parser needed.

/// The text of every `<tag>…</tag>` in `doc`, in order, with entities decoded.
pub(crate) fn all(doc: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(unescape(&after[..j]));
        rest = &after[j + close.len()..];
    }
    out
}

pub(crate) fn first(doc: &str, tag: &str) -> Option<String> {
    all(doc, tag).into_iter().next()
}

/// The raw inner text of every `<tag>…</tag>` (not decoded), for nested records.
pub(crate) fn blocks<'a>(doc: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    #[test]
    fn elements() {
        let d = "<R><C><Key>a&amp;b</Key><Size>3</Size></C><C><Key>c</Key><Size>4</Size></C></R>";
        assert_eq!(super::all(d, "Key"), vec!["a&b", "c"]);
        assert_eq!(super::blocks(d, "C").len(), 2);
        assert_eq!(super::first(d, "Size").as_deref(), Some("3"));
        assert_eq!(super::first(d, "None"), None);
    }
}
