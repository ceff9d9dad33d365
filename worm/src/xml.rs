//! The stores' XML answers (listings, lock configurations), parsed with `quick-xml` into a
//! small element tree: names are matched by local name (S3 answers carry a namespace),
//! text is unescaped by the parser (numeric character references included), and a
//! malformed answer is an error rather than a partial listing. Substring matching, used
//! before, could be led astray by a key or a comment holding markup-like text; a bucket
//! verifier reads these answers from a store it does not trust.

use quick_xml::events::Event;
use quick_xml::Reader;

/// One element: its local name, its own text, and its child elements in order.
#[derive(Debug, Default)]
pub(crate) struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

/// The largest element nesting accepted (the stores' answers are three or four deep).
const DEPTH_MAX: usize = 32;

/// Parses a whole document into its root element.
pub(crate) fn parse(doc: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(doc);
    let mut stack: Vec<Element> = vec![Element::default()];
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                if stack.len() > DEPTH_MAX {
                    return Err(format!("nested deeper than {DEPTH_MAX} elements"));
                }
                stack.push(Element {
                    name: local(e.local_name().as_ref())?,
                    ..Element::default()
                });
            }
            Ok(Event::Empty(e)) => {
                let el = Element {
                    name: local(e.local_name().as_ref())?,
                    ..Element::default()
                };
                top(&mut stack)?.children.push(el);
            }
            Ok(Event::End(_)) => {
                if stack.len() < 2 {
                    return Err("an end tag without its start".into());
                }
                let done = stack.pop().ok_or("unbalanced")?;
                top(&mut stack)?.children.push(done);
            }
            Ok(Event::Text(t)) => {
                let text = t.unescape().map_err(|e| e.to_string())?;
                top(&mut stack)?.text.push_str(&text);
            }
            Ok(Event::CData(t)) => {
                let text = std::str::from_utf8(&t).map_err(|e| e.to_string())?;
                top(&mut stack)?.text.push_str(text);
            }
            Ok(Event::Eof) => break,
            Ok(_) => {} // declaration, comments, processing instructions
            Err(e) => return Err(format!("at byte {}: {e}", reader.buffer_position())),
        }
    }
    if stack.len() != 1 {
        return Err("unclosed elements at the end".into());
    }
    let mut doc = stack.pop().ok_or("empty")?;
    match doc.children.len() {
        1 => Ok(doc.children.remove(0)),
        n => Err(format!("{n} root elements")),
    }
}

fn top(stack: &mut [Element]) -> Result<&mut Element, String> {
    stack.last_mut().ok_or_else(|| "unbalanced".to_string())
}

fn local(name: &[u8]) -> Result<String, String> {
    std::str::from_utf8(name)
        .map(str::to_string)
        .map_err(|e| e.to_string())
}

impl Element {
    /// The elements named `tag` at or below this one, in document order; the search does
    /// not go below a match.
    pub fn all(&self, tag: &str) -> Vec<&Element> {
        let mut out = Vec::new();
        self.collect(tag, &mut out);
        out
    }

    fn collect<'a>(&'a self, tag: &str, out: &mut Vec<&'a Element>) {
        for c in &self.children {
            if c.name == tag {
                out.push(c);
            } else {
                c.collect(tag, out);
            }
        }
    }

    /// The text of the first element named `tag` below this one.
    pub fn text_of(&self, tag: &str) -> Option<String> {
        self.all(tag).first().map(|e| e.text.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_and_markup_in_keys() {
        let d = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <!-- <Contents><Key>ghost</Key></Contents> -->
  <Contents><Key>a&amp;b&#x3C;/Key&#62;</Key><Size>3</Size></Contents>
  <Contents><Key><![CDATA[c]]></Key><Size>4</Size></Contents>
  <IsTruncated>false</IsTruncated><Empty/>
</ListBucketResult>"#;
        let root = parse(d).expect("parses");
        assert_eq!(root.name, "ListBucketResult");
        let keys: Vec<String> = root
            .all("Contents")
            .iter()
            .filter_map(|c| c.text_of("Key"))
            .collect();
        assert_eq!(keys, vec!["a&b</Key>", "c"], "no ghost from the comment");
        assert_eq!(root.text_of("Size").as_deref(), Some("3"));
        assert_eq!(root.text_of("IsTruncated").as_deref(), Some("false"));
        assert_eq!(root.text_of("None"), None);
        // Azure nests the size under Properties.
        let a = parse("<E><Blobs><Blob><Name>x</Name><Properties><Content-Length>9</Content-Length></Properties></Blob></Blobs></E>").expect("parses");
        assert_eq!(
            a.all("Blob")[0].text_of("Content-Length").as_deref(),
            Some("9")
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        for bad in [
            "<R><Key>a</R>",
            "<R><Key>a</Key>",
            "<R/><S/>",
            "",
            "<R>&bogus;</R>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "<a>".repeat(40) + &"</a>".repeat(40);
        assert!(parse(&deep).is_err());
    }
}
