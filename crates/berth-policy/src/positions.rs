//! Where each statement of a policy document sits in its text, as IAM's
//! policy simulator reports it (`StartPosition`/`EndPosition`, 1-based line
//! and column of a statement's opening and closing brace).

/// A line and column in a policy document, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// The span of every statement of `text`, in document order: the elements
/// of the top-level `Statement` array, or the one object when `Statement` is
/// an object. Empty when the text is not a JSON object.
pub fn statement_positions(text: &str) -> Vec<(Position, Position)> {
    let mut s = Scanner {
        chars: text.chars().collect(),
        at: 0,
        line: 1,
        column: 1,
    };
    s.top_level().unwrap_or_default()
}

struct Scanner {
    chars: Vec<char>,
    at: usize,
    line: usize,
    column: usize,
}

impl Scanner {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn here(&self) -> Position {
        Position {
            line: self.line,
            column: self.column,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn expect(&mut self, c: char) -> Option<()> {
        self.ws();
        (self.bump()? == c).then_some(())
    }

    fn string(&mut self) -> Option<String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.bump()? {
                '"' => return Some(out),
                '\\' => {
                    out.push(self.bump()?);
                }
                c => out.push(c),
            }
        }
    }

    /// Skips one value; returns the position of its last character.
    fn value(&mut self) -> Option<Position> {
        self.ws();
        match self.peek()? {
            '"' => {
                self.string()?;
            }
            '{' => {
                self.bump();
                self.ws();
                if self.peek()? != '}' {
                    loop {
                        self.string()?;
                        self.expect(':')?;
                        self.value()?;
                        self.ws();
                        if self.peek()? == ',' {
                            self.bump();
                        } else {
                            break;
                        }
                    }
                }
                self.ws();
                let end = self.here();
                self.expect('}')?;
                return Some(end);
            }
            '[' => {
                self.bump();
                self.ws();
                if self.peek()? != ']' {
                    loop {
                        self.value()?;
                        self.ws();
                        if self.peek()? == ',' {
                            self.bump();
                        } else {
                            break;
                        }
                    }
                }
                self.ws();
                let end = self.here();
                self.expect(']')?;
                return Some(end);
            }
            _ => {
                while self
                    .peek()
                    .is_some_and(|c| !matches!(c, ',' | '}' | ']') && !c.is_whitespace())
                {
                    self.bump();
                }
            }
        }
        Some(Position {
            line: self.line,
            column: self.column.saturating_sub(1).max(1),
        })
    }

    fn top_level(&mut self) -> Option<Vec<(Position, Position)>> {
        self.expect('{')?;
        let mut spans = Vec::new();
        loop {
            self.ws();
            if self.peek()? == '}' {
                break;
            }
            let key = self.string()?;
            self.expect(':')?;
            self.ws();
            if key == "Statement" {
                match self.peek()? {
                    '{' => {
                        let start = self.here();
                        let end = self.value()?;
                        spans.push((start, end));
                    }
                    '[' => {
                        self.bump();
                        loop {
                            self.ws();
                            if self.peek()? == ']' {
                                break;
                            }
                            let start = self.here();
                            let end = self.value()?;
                            spans.push((start, end));
                            self.ws();
                            if self.peek()? == ',' {
                                self.bump();
                            }
                        }
                        self.bump();
                    }
                    _ => {
                        self.value()?;
                    }
                }
            } else {
                self.value()?;
            }
            self.ws();
            if self.peek()? == ',' {
                self.bump();
            }
        }
        Some(spans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    #[test]
    fn spans_of_an_array_and_of_a_single_statement() {
        let text = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [\n    {\"Effect\": \"Allow\", \"Action\": \"s3:*\", \"Resource\": [\"*\"]},\n    {\n      \"Effect\": \"Deny\", \"Action\": \"s3:x\", \"Resource\": \"*\"\n    }\n  ]\n}";
        assert_eq!(
            statement_positions(text),
            vec![(p(4, 5), p(4, 60)), (p(5, 5), p(7, 5))]
        );
        let one = r#"{"Statement":{"Effect":"Allow","Action":"a:b","Resource":"*"}}"#;
        assert_eq!(statement_positions(one), vec![(p(1, 14), p(1, 61))]);
        assert!(statement_positions("not json").is_empty());
    }
}
