//! [`Expr`]: the `filter:` expression of a `clean` stage, parsed once and evaluated over a whole
//! table with Arrow's comparison and boolean kernels.
//!
//! The language is deliberately small: comparisons `column OP literal` (OP one of `==`, `!=`,
//! `<`, `<=`, `>`, `>=`; literals are numbers, quoted strings, `true` and `false`) combined with
//! `and`, `or`, `not` and parentheses. A column whose name is not a plain identifier is written
//! in backticks. Parse errors name the 1-based character position in the expression.
//!
//! Chains of `and` and `or` are kept flat (one node with many operands), and parentheses and
//! `not` may nest at most [`MAX_DEPTH`] deep, so parsing, evaluating and dropping an expression
//! recurse only that deep whatever its length: a filter is user input, and recursion without a
//! bound ends in a stack overflow, which aborts the process.

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Scalar, StringArray};
use arrow::compute::kernels::cmp;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A literal on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// How deep parentheses and `not` may nest in one filter.
pub(crate) const MAX_DEPTH: usize = 64;

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Compare {
        column: String,
        op: Op,
        value: Literal,
    },
    /// True when all operands are (two or more).
    And(Vec<Expr>),
    /// True when any operand is (two or more).
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

/// Why an expression does not parse, at a 1-based character position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub(crate) struct ParseError {
    pub(crate) position: usize,
    pub(crate) message: String,
}

/// Why an expression cannot be evaluated on a table.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EvalError {
    #[error("unknown column `{0}`")]
    UnknownColumn(String),
    #[error("the filter compares column `{column}` of type {data_type} with {literal}")]
    Mismatch {
        column: String,
        data_type: DataType,
        literal: &'static str,
    },
    #[error("the filter cannot be evaluated: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Op(Op),
    Number(f64),
    Text(String),
    Open,
    Close,
}

/// Splits `src` into tokens, each with its 1-based character position.
fn tokenize(src: &str) -> Result<Vec<(Token, usize)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let err = |position: usize, message: String| ParseError { position, message };
    while i < chars.len() {
        let c = chars[i];
        let start = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' || c == ')' {
            tokens.push((if c == '(' { Token::Open } else { Token::Close }, start));
            i += 1;
        } else if "=!<>".contains(c) {
            let next = chars.get(i + 1).copied();
            let (op, len) = match (c, next) {
                ('=', Some('=')) => (Op::Eq, 2),
                ('!', Some('=')) => (Op::Ne, 2),
                ('<', Some('=')) => (Op::Le, 2),
                ('>', Some('=')) => (Op::Ge, 2),
                ('<', _) => (Op::Lt, 1),
                ('>', _) => (Op::Gt, 1),
                ('=', _) => return Err(err(start, "`=` is not an operator; write `==`".into())),
                _ => {
                    return Err(err(
                        start,
                        "`!` is not an operator; write `!=` or `not`".into(),
                    ))
                }
            };
            tokens.push((Token::Op(op), start));
            i += len;
        } else if c == '"' || c == '\'' || c == '`' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(err(start, format!("unterminated {c}-quoted text")));
                    }
                    Some('\\') if c != '`' && chars.get(i + 1).is_some() => {
                        text.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        text.push(other);
                        i += 1;
                    }
                }
            }
            tokens.push((
                if c == '`' {
                    Token::Ident(text)
                } else {
                    Token::Text(text)
                },
                start,
            ));
        } else if c.is_ascii_digit()
            || ((c == '-' || c == '.')
                && chars
                    .get(i + 1)
                    .is_some_and(|n| n.is_ascii_digit() || *n == '.'))
        {
            let mut end = i + 1;
            while end < chars.len()
                && (chars[end].is_ascii_alphanumeric()
                    || chars[end] == '.'
                    || ((chars[end] == '-' || chars[end] == '+')
                        && matches!(chars[end - 1], 'e' | 'E')))
            {
                end += 1;
            }
            let text: String = chars[i..end].iter().collect();
            let n = text
                .parse::<f64>()
                .map_err(|_| err(start, format!("`{text}` is not a number")))?;
            // Rust reads `1e400` as infinity; a comparison with it would hold for every row.
            if !n.is_finite() {
                return Err(err(
                    start,
                    format!("`{text}` is too large: numbers go up to about 1.8e308"),
                ));
            }
            tokens.push((Token::Number(n), start));
            i = end;
        } else if c.is_alphabetic() || c == '_' {
            let mut end = i + 1;
            while end < chars.len()
                && (chars[end].is_alphanumeric() || chars[end] == '_' || chars[end] == '.')
            {
                end += 1;
            }
            tokens.push((Token::Ident(chars[i..end].iter().collect()), start));
            i = end;
        } else {
            return Err(err(start, format!("unexpected `{c}`")));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    next: usize,
    /// The position just past the end of the expression, for errors there.
    end: usize,
    /// How many parentheses and `not`s enclose the token being read.
    depth: usize,
}

fn describe(token: &Token) -> String {
    match token {
        Token::Ident(s) => format!("`{s}`"),
        Token::Op(op) => format!("`{}`", op.symbol()),
        Token::Number(n) => format!("`{n}`"),
        Token::Text(s) => format!("\"{s}\""),
        Token::Open => "`(`".into(),
        Token::Close => "`)`".into(),
    }
}

impl Op {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(t, _)| t)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(s)) if s == word)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(_, p)| *p)
    }

    fn unexpected(&self, wanted: &str) -> ParseError {
        let found = match self.peek() {
            Some(t) => describe(t),
            None => "the end".into(),
        };
        ParseError {
            position: self.position(),
            message: format!("expected {wanted}, found {found}"),
        }
    }

    /// Enters one more level of parentheses or `not`, refusing to go past [`MAX_DEPTH`].
    fn deeper(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError {
                position: self.position(),
                message: format!(
                    "the filter nests parentheses and `not` more than {MAX_DEPTH} deep"
                ),
            });
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut operands = vec![self.and()?];
        while self.keyword("or") {
            self.next += 1;
            operands.push(self.and()?);
        }
        Ok(match operands.len() {
            1 => operands.pop().expect("one operand"),
            _ => Expr::Or(operands),
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut operands = vec![self.not()?];
        while self.keyword("and") {
            self.next += 1;
            operands.push(self.not()?);
        }
        Ok(match operands.len() {
            1 => operands.pop().expect("one operand"),
            _ => Expr::And(operands),
        })
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        // Counted in a loop rather than by recursion, so that a long run of `not`s meets the
        // depth limit instead of the stack's end.
        let mut nots = 0;
        while self.keyword("not") {
            self.deeper()?;
            self.next += 1;
            nots += 1;
        }
        let mut e = self.primary()?;
        for _ in 0..nots {
            e = Expr::Not(Box::new(e));
        }
        self.depth -= nots;
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        match self.peek().cloned() {
            Some(Token::Open) => {
                self.deeper()?;
                self.next += 1;
                let inner = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(self.unexpected("`)`"));
                }
                self.next += 1;
                self.depth -= 1;
                Ok(inner)
            }
            Some(Token::Ident(column)) if !["and", "or", "not"].contains(&column.as_str()) => {
                self.next += 1;
                let op = match self.peek() {
                    Some(Token::Op(op)) => *op,
                    _ => return Err(self.unexpected("a comparison (==, !=, <, <=, >, >=)")),
                };
                self.next += 1;
                let value = match self.peek() {
                    Some(Token::Number(n)) => Literal::Number(*n),
                    Some(Token::Text(s)) => Literal::Text(s.clone()),
                    Some(Token::Ident(s)) if s == "true" || s == "false" => {
                        Literal::Bool(s == "true")
                    }
                    _ => {
                        return Err(self.unexpected("a number, a quoted string, `true` or `false`"))
                    }
                };
                self.next += 1;
                Ok(Expr::Compare { column, op, value })
            }
            _ => Err(self.unexpected("a column name, `not` or `(`")),
        }
    }
}

impl Expr {
    /// Parses a whole expression.
    pub(crate) fn parse(src: &str) -> Result<Expr, ParseError> {
        let tokens = tokenize(src)?;
        let mut parser = Parser {
            tokens,
            next: 0,
            end: src.chars().count() + 1,
            depth: 0,
        };
        let expr = parser.or()?;
        if parser.peek().is_some() {
            return Err(parser.unexpected("`and`, `or` or the end"));
        }
        Ok(expr)
    }

    /// Every column the expression names, in order of appearance.
    pub(crate) fn columns(&self) -> Vec<&str> {
        match self {
            Expr::Compare { column, .. } => vec![column.as_str()],
            Expr::And(all) | Expr::Or(all) => all.iter().flat_map(Expr::columns).collect(),
            Expr::Not(a) => a.columns(),
        }
    }

    /// Evaluates the expression on every row. A comparison with a missing value is unknown, and
    /// `and`/`or`/`not` follow SQL's three-valued logic; the caller keeps only `true` rows.
    pub(crate) fn eval(&self, batch: &RecordBatch) -> Result<BooleanArray, EvalError> {
        match self {
            Expr::Compare { column, op, value } => {
                let array = batch
                    .column_by_name(column)
                    .ok_or_else(|| EvalError::UnknownColumn(column.clone()))?;
                compare(column, array, *op, value)
            }
            Expr::And(all) => fold(all, batch, arrow::compute::and_kleene),
            Expr::Or(all) => fold(all, batch, arrow::compute::or_kleene),
            Expr::Not(a) => Ok(arrow::compute::not(&a.eval(batch)?)?),
        }
    }
}

/// Combines the operands of an `and` or `or` chain left to right with `kernel`.
fn fold(
    all: &[Expr],
    batch: &RecordBatch,
    kernel: fn(&BooleanArray, &BooleanArray) -> Result<BooleanArray, arrow::error::ArrowError>,
) -> Result<BooleanArray, EvalError> {
    let (first, rest) = all.split_first().expect("a chain has operands");
    let mut acc = first.eval(batch)?;
    for e in rest {
        acc = kernel(&acc, &e.eval(batch)?)?;
    }
    Ok(acc)
}

fn compare(
    column: &str,
    array: &ArrayRef,
    op: Op,
    value: &Literal,
) -> Result<BooleanArray, EvalError> {
    let data_type = array.data_type();
    let mismatch = |literal| EvalError::Mismatch {
        column: column.to_string(),
        data_type: data_type.clone(),
        literal,
    };
    let (left, right): (ArrayRef, ArrayRef) = match value {
        Literal::Number(n) if data_type.is_numeric() => (
            arrow::compute::cast(array, &DataType::Float64)?,
            Arc::new(Float64Array::from(vec![*n])),
        ),
        Literal::Number(_) => return Err(mismatch("a number")),
        Literal::Text(s) if matches!(data_type, DataType::Utf8 | DataType::LargeUtf8) => (
            arrow::compute::cast(array, &DataType::Utf8)?,
            Arc::new(StringArray::from(vec![s.as_str()])),
        ),
        // Dates and times compare with their ISO text: `day >= "2024-01-01"`.
        Literal::Text(s) if data_type.is_temporal() => (
            array.clone(),
            arrow::compute::cast(&StringArray::from(vec![s.as_str()]), data_type)?,
        ),
        Literal::Text(_) => return Err(mismatch("a string")),
        Literal::Bool(b) if *data_type == DataType::Boolean => {
            (array.clone(), Arc::new(BooleanArray::from(vec![*b])))
        }
        Literal::Bool(_) => return Err(mismatch("a boolean")),
    };
    let right = Scalar::new(right);
    let result = match op {
        Op::Eq => cmp::eq(&left, &right),
        Op::Ne => cmp::neq(&left, &right),
        Op::Lt => cmp::lt(&left, &right),
        Op::Le => cmp::lt_eq(&left, &right),
        Op::Gt => cmp::gt(&left, &right),
        Op::Ge => cmp::gt_eq(&left, &right),
    }?;
    debug_assert_eq!(result.len(), array.len());
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn cmp(column: &str, op: Op, value: Literal) -> Expr {
        Expr::Compare {
            column: column.into(),
            op,
            value,
        }
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let e = Expr::parse("a > 1 or not b == 'x' and `my col` <= -2.5e1").unwrap();
        assert_eq!(
            e,
            Expr::Or(vec![
                cmp("a", Op::Gt, Literal::Number(1.0)),
                Expr::And(vec![
                    Expr::Not(Box::new(cmp("b", Op::Eq, Literal::Text("x".into())))),
                    cmp("my col", Op::Le, Literal::Number(-25.0)),
                ]),
            ])
        );
        let e = Expr::parse("a > 1 and b > 2 and c > 3 or d > 4").unwrap();
        assert_eq!(
            e,
            Expr::Or(vec![
                Expr::And(vec![
                    cmp("a", Op::Gt, Literal::Number(1.0)),
                    cmp("b", Op::Gt, Literal::Number(2.0)),
                    cmp("c", Op::Gt, Literal::Number(3.0)),
                ]),
                cmp("d", Op::Gt, Literal::Number(4.0)),
            ])
        );
        let e = Expr::parse("(a != true or b >= 0) and c < \"q\\\"\"").unwrap();
        assert_eq!(e.columns(), ["a", "b", "c"]);
    }

    #[test]
    fn errors_name_the_position() {
        let msg = |s: &str| Expr::parse(s).unwrap_err().to_string();
        assert_eq!(
            msg("a = 1"),
            "`=` is not an operator; write `==` at position 3"
        );
        assert_eq!(
            msg("a > 1 and"),
            "expected a column name, `not` or `(`, found the end at position 10"
        );
        assert_eq!(msg("(a > 1"), "expected `)`, found the end at position 7");
        assert_eq!(
            msg("a > b"),
            "expected a number, a quoted string, `true` or `false`, found `b` at position 5"
        );
        assert_eq!(
            msg("a 1"),
            "expected a comparison (==, !=, <, <=, >, >=), found `1` at position 3"
        );
        assert_eq!(msg("a == 'x"), "unterminated '-quoted text at position 6");
        assert_eq!(
            msg("a > -1e400"),
            "`-1e400` is too large: numbers go up to about 1.8e308 at position 5"
        );
        assert_eq!(
            msg("a == 1 b"),
            "expected `and`, `or` or the end, found `b` at position 8"
        );
        assert_eq!(msg("a == 1 # x"), "unexpected `#` at position 8");
    }

    #[test]
    fn nesting_is_bounded_and_chains_are_flat() {
        let msg = |s: &str| Expr::parse(s).unwrap_err().to_string();
        let parens = |n: usize| format!("{}a > 1{}", "(".repeat(n), ")".repeat(n));
        assert!(Expr::parse(&parens(MAX_DEPTH)).is_ok());
        assert_eq!(
            msg(&parens(5_000)),
            "the filter nests parentheses and `not` more than 64 deep at position 65"
        );
        assert!(Expr::parse(&format!("{}a > 1", "not ".repeat(MAX_DEPTH))).is_ok());
        assert_eq!(
            msg(&format!("{}a > 1", "not ".repeat(100_000))),
            "the filter nests parentheses and `not` more than 64 deep at position 257"
        );
        // Depth counts what encloses a token, not how many parentheses came before it.
        let siblings = vec![parens(MAX_DEPTH); 3].join(" and ");
        assert!(Expr::parse(&siblings).is_ok());
        // A long chain is one node: evaluating and dropping it recurses once.
        let long = vec!["n > 0"; 100_000].join(" and ");
        let e = Expr::parse(&long).unwrap();
        let Expr::And(all) = &e else { panic!("{e:?}") };
        assert_eq!(all.len(), 100_000);
        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(arrow::array::Int64Array::from(vec![1, 0])) as ArrayRef,
        )])
        .unwrap();
        let kept: Vec<Option<bool>> = e.eval(&batch).unwrap().iter().collect();
        assert_eq!(kept, [Some(true), Some(false)]);
    }

    #[test]
    fn evaluation_uses_three_valued_logic() {
        let batch = RecordBatch::try_from_iter([
            (
                "n",
                Arc::new(Int64Array::from(vec![Some(1), Some(5), None])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a"), Some("b"), Some("a")])) as _,
            ),
        ])
        .unwrap();
        let eval = |s: &str| -> Vec<Option<bool>> {
            Expr::parse(s)
                .unwrap()
                .eval(&batch)
                .unwrap()
                .iter()
                .collect()
        };
        assert_eq!(eval("n > 2"), [Some(false), Some(true), None]);
        assert_eq!(eval("not n > 2"), [Some(true), Some(false), None]);
        assert_eq!(
            eval("n > 2 or s == 'a'"),
            [Some(true), Some(true), Some(true)]
        );
        assert_eq!(
            eval("n >= 1.5 and s != 'b'"),
            [Some(false), Some(false), None]
        );
        let e = Expr::parse("s > 1").unwrap().eval(&batch).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the filter compares column `s` of type Utf8 with a number"
        );
    }
}
