//! `${{ ... }}` expressions: parsing strings into literal text and references, so that a later
//! step can substitute parameters and output paths and record which ones a stage depends on.

/// What an expression refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    /// `params.NAME`
    Param(String),
    /// `stages.STAGE.outputs.NAME`, or with `[*]` (`all`) every instance of a matrix stage's
    /// output as a list.
    StageOutput {
        stage: String,
        output: String,
        all: bool,
    },
    /// `matrix.KEY`: the instance's value of one of its stage's matrix keys.
    Matrix(String),
    /// `outputs.NAME`: one of this stage's own outputs.
    Output(String),
    /// `inputs.NAME`: one of this stage's own inputs.
    Input(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Expr(Ref),
}

/// Splits `s` into pieces. Errors describe the malformed expression.
pub fn parse(s: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            return Err(format!(
                "unclosed expression `{}`",
                truncate(&rest[start..], 40)
            ));
        };
        let expr = after[..end].trim();
        pieces.push(Piece::Expr(parse_ref(expr)?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn parse_ref(expr: &str) -> Result<Ref, String> {
    let (expr, all) = match expr.strip_suffix("[*]") {
        Some(e) if e.starts_with("stages.") => (e.trim_end(), true),
        _ => (expr, false),
    };
    let parts: Vec<&str> = expr.split('.').map(str::trim).collect();
    let ok_ident = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    // A message quotes at most the start of an expression: a value can be megabytes long.
    let shown = truncate(expr, 60);
    if !parts.iter().all(|p| ok_ident(p)) {
        return Err(format!("malformed expression `${{{{ {shown} }}}}`"));
    }
    match parts.as_slice() {
        ["params", name] => Ok(Ref::Param(name.to_string())),
        ["stages", stage, "outputs", output] => Ok(Ref::StageOutput {
            stage: stage.to_string(),
            output: output.to_string(),
            all,
        }),
        ["matrix", key] => Ok(Ref::Matrix(key.to_string())),
        ["outputs", name] => Ok(Ref::Output(name.to_string())),
        ["inputs", name] => Ok(Ref::Input(name.to_string())),
        _ => Err(format!(
            "unknown expression `${{{{ {shown} }}}}`: expected `params.NAME`, `matrix.KEY`, `stages.STAGE.outputs.NAME`, `inputs.NAME` or `outputs.NAME`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gather_and_matrix() {
        assert_eq!(
            parse("${{ stages.t.outputs.model[*] }}").unwrap(),
            vec![Piece::Expr(Ref::StageOutput {
                stage: "t".into(),
                output: "model".into(),
                all: true,
            })]
        );
        assert_eq!(
            parse("${{ matrix.lr }}").unwrap(),
            vec![Piece::Expr(Ref::Matrix("lr".into()))]
        );
        assert!(parse("${{ params.x[*] }}").is_err());
    }

    #[test]
    fn parses_mixed_text() {
        let p = parse("python x.py ${{ stages.a.outputs.m }} > ${{outputs.r}}").unwrap();
        assert_eq!(
            p,
            vec![
                Piece::Text("python x.py ".into()),
                Piece::Expr(Ref::StageOutput {
                    stage: "a".into(),
                    output: "m".into(),
                    all: false,
                }),
                Piece::Text(" > ".into()),
                Piece::Expr(Ref::Output("r".into())),
            ]
        );
    }

    #[test]
    fn rejects_bad_expressions() {
        assert!(parse("${{ params.x").unwrap_err().contains("unclosed"));
        assert!(parse("${{ foo.bar }}")
            .unwrap_err()
            .contains("unknown expression"));
        assert!(parse("${{ params.a b }}")
            .unwrap_err()
            .contains("malformed"));
        // Nested and endless expressions are refused without recursion, and quoted briefly.
        let nested = format!("{}x{}", "${{ ".repeat(10_000), " }}".repeat(10_000));
        let e = parse(&nested).unwrap_err();
        assert!(
            e.starts_with("malformed expression `${{ ${{ ${{") && e.len() < 120,
            "{e}"
        );
        let e = parse(&format!("${{{{ params.{}", "x".repeat(100_000))).unwrap_err();
        assert!(e.starts_with("unclosed expression") && e.len() < 120, "{e}");
    }
}
