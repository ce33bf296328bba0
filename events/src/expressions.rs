//! Expressions inside a pipeline's strings: `${{ secrets.NAME }}` and
//! `${{ nodes.ID.outputs.KEY }}`. Vocabulary: the catalog's checks read them when a pipeline is
//! saved, and the agent fills them in when it runs one.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Secret(String),
    NodeOutput { node: String, key: String },
}

/// Why a text's expressions cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    #[error("unterminated expression in {0:?}: close it with }}}}")]
    Unterminated(String),
    #[error("unknown expression ${{{{ {0} }}}}: use ${{{{ secrets.NAME }}}} or ${{{{ nodes.ID.outputs.KEY }}}}")]
    Unknown(String),
}

/// Every reference in `text`, or why one is malformed.
pub fn references(text: &str) -> Result<Vec<Reference>, ExpressionError> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| ExpressionError::Unterminated(text.to_owned()))?;
        let expr = after[..end].trim();
        let parts: Vec<&str> = expr.split('.').collect();
        let reference = match parts[..] {
            ["secrets", name] if !name.is_empty() => Reference::Secret(name.to_owned()),
            ["nodes", node, "outputs", key] if !node.is_empty() && !key.is_empty() => Reference::NodeOutput { node: node.to_owned(), key: key.to_owned() },
            _ => return Err(ExpressionError::Unknown(expr.to_owned())),
        };
        out.push(reference);
        rest = &after[end + 2..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_and_bad_ones_named() {
        assert_eq!(
            references("postgres://${{ nodes.db.outputs.host }}/${{secrets.DB}}"),
            Ok(vec![Reference::NodeOutput { node: "db".into(), key: "host".into() }, Reference::Secret("DB".into())])
        );
        assert_eq!(
            references("${{ nodes.db }}").unwrap_err().to_string(),
            "unknown expression ${{ nodes.db }}: use ${{ secrets.NAME }} or ${{ nodes.ID.outputs.KEY }}"
        );
        assert_eq!(references("${{ secrets.X").unwrap_err().to_string(), "unterminated expression in \"${{ secrets.X\": close it with }}");
    }
}
