//! Argument values as written in `model!` (or given at run time), each layer's argument
//! table, and the binding of written arguments to that table.
//!
//! Binding is generic: positional arguments take the table's leading names in order,
//! names are checked against the table (with a "did you mean"), duplicates are refused,
//! and an argument that was not written reads as the table's default.

use crate::names::did_you_mean;
use std::fmt;

/// One written argument value. `model!` turns literals into these without knowing the
/// layer: numbers, `true`/`false`, bare names or strings (`relu`, `"same"`), and tuples
/// or arrays of them (`(3, 3)`, `[7, 7, 16]`).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A whole number.
    Int(i64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// A bare name or a string.
    Name(String),
    /// A tuple or an array.
    List(Vec<Value>),
    /// A layer written as an argument (`Bidirectional(LSTM(64))`): its class and its
    /// own written arguments.
    Layer(String, OwnedArgs),
}

/// Written arguments that own their names (a nested layer's).
pub type OwnedArgs = Vec<(Option<String>, Value)>;

impl Value {
    /// A name value (`Value::name("relu")`).
    pub fn name(s: &str) -> Value {
        Value::Name(s.to_string())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Name(v) => write!(f, "{v}"),
            Value::List(v) => {
                let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                write!(f, "({})", parts.join(", "))
            }
            Value::Layer(class, _) => write!(f, "{class}(..)"),
        }
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::name(v)
    }
}
impl From<(usize, usize)> for Value {
    fn from(v: (usize, usize)) -> Self {
        Value::List(vec![v.0.into(), v.1.into()])
    }
}
impl From<&[usize]> for Value {
    fn from(v: &[usize]) -> Self {
        Value::List(v.iter().map(|&d| d.into()).collect())
    }
}

/// What an argument holds, for validation messages and the generated docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole number ≥ 0.
    Count,
    /// A number, or a pair `(h, w)` of whole numbers (2-D windows).
    CountOrPair,
    /// A list of whole numbers (a shape).
    Shape,
    /// A number.
    Number,
    /// `true` or `false`.
    Bool,
    /// An activation name.
    Activation,
    /// An initializer name.
    Initializer,
    /// One of these names.
    OneOf(&'static [&'static str]),
    /// A layer, written as a call (`LSTM(64)`).
    Layer,
}

impl Kind {
    /// How the kind reads in a sentence.
    pub fn describe(&self) -> String {
        match self {
            Kind::Count => "a whole number".into(),
            Kind::CountOrPair => "a whole number or a pair `(h, w)`".into(),
            Kind::Shape => "an array of whole numbers such as [7, 7, 16]".into(),
            Kind::Number => "a number".into(),
            Kind::Bool => "`true` or `false`".into(),
            Kind::Activation => "an activation name such as relu".into(),
            Kind::Initializer => "an initializer name such as glorot_uniform".into(),
            Kind::OneOf(v) => format!("one of {}", v.join(", ")),
            Kind::Layer => "a layer such as LSTM(64)".into(),
        }
    }
}

/// An argument's default when it is not written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Default {
    /// It must be written.
    Required,
    /// Absent; the layer derives it (pooling strides default to the pool size).
    Derived(&'static str),
    /// A whole number.
    Int(i64),
    /// A number.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// A name.
    Name(&'static str),
}

impl Default {
    fn value(&self) -> Option<Value> {
        match *self {
            Default::Required | Default::Derived(_) => None,
            Default::Int(v) => Some(Value::Int(v)),
            Default::Float(v) => Some(Value::Float(v)),
            Default::Bool(v) => Some(Value::Bool(v)),
            Default::Name(v) => Some(Value::name(v)),
        }
    }
}

impl fmt::Display for Default {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Default::Required => write!(f, "required"),
            Default::Derived(s) => write!(f, "{s}"),
            Default::Int(v) => write!(f, "{v}"),
            Default::Float(v) => write!(f, "{v:?}"),
            Default::Bool(v) => write!(f, "{v}"),
            Default::Name(v) => write!(f, "{v}"),
        }
    }
}

/// One row of a layer's argument table.
#[derive(Clone, Copy, Debug)]
pub struct ArgDef {
    /// Keras's name.
    pub name: &'static str,
    /// Other names accepted for it (`kernel_size` for `kernel`).
    pub aliases: &'static [&'static str],
    /// What it holds.
    pub kind: Kind,
    /// Its default.
    pub default: Default,
}

impl ArgDef {
    /// A row with no alias.
    pub const fn new(name: &'static str, kind: Kind, default: Default) -> Self {
        ArgDef { name, aliases: &[], kind, default }
    }
    /// The same row, also accepting `aliases`.
    pub const fn alias(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }
}

/// A specification's complaint: the sentence, and the argument it is about (so
/// `model!` can point at it), if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// The argument the sentence is about, or `None` for the layer as a whole.
    pub arg: Option<&'static str>,
    /// Which written argument (by position in the call) it is about, when known.
    pub written: Option<usize>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl SpecError {
    /// A complaint about the layer as a whole (its input shape, usually).
    pub fn layer(message: impl Into<String>) -> Self {
        SpecError { arg: None, written: None, message: message.into() }
    }
    /// A complaint about one argument.
    pub fn arg(arg: &'static str, message: impl Into<String>) -> Self {
        SpecError { arg: Some(arg), written: None, message: message.into() }
    }
    fn at(mut self, written: usize) -> Self {
        self.written = Some(written);
        self
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

/// A layer's written arguments bound to its table (see [`Args::bind`]).
#[derive(Clone, Debug)]
pub struct Args {
    class: &'static str,
    table: &'static [ArgDef],
    values: Vec<Option<Value>>,
    /// For each table row, which written argument gave it.
    written: Vec<Option<usize>>,
}

impl Args {
    /// Binds written arguments (`None` name: positional) to `table`, whose first
    /// `positional` rows may be given by position.
    pub fn bind(
        class: &'static str,
        table: &'static [ArgDef],
        positional: usize,
        given: &[(Option<&str>, Value)],
    ) -> Result<Args, SpecError> {
        let mut values: Vec<Option<Value>> = vec![None; table.len()];
        let mut written = vec![None; table.len()];
        let mut pos = 0;
        for (w, (name, value)) in given.iter().enumerate() {
            let i = match name {
                None => {
                    if pos >= positional {
                        let example: Vec<&str> =
                            table.iter().take(positional).map(|a| a.name).collect();
                        return Err(SpecError::layer(if positional == 0 {
                            format!("{class} takes no positional arguments; name them, as in `{class}({} = ..)`", table.first().map_or("name", |a| a.name))
                        } else {
                            format!(
                                "{class} takes {positional} positional argument(s) ({}); name the others, as in `{} = ..`",
                                example.join(", "),
                                table.get(positional).map_or("name", |a| a.name)
                            )
                        })
                        .at(w));
                    }
                    pos += 1;
                    pos - 1
                }
                Some(n) => match table.iter().position(|a| a.name == *n || a.aliases.contains(n)) {
                    Some(i) => i,
                    None => {
                        let names: Vec<&str> = table.iter().map(|a| a.name).collect();
                        let mut all = names.clone();
                        all.extend(table.iter().flat_map(|a| a.aliases.iter().copied()));
                        let hint = did_you_mean(n, &all)
                            .map(|s| {
                                let canonical = table
                                    .iter()
                                    .find(|a| a.name == s || a.aliases.contains(&s))
                                    .map_or(s, |a| a.name);
                                format!("did you mean `{canonical}`? ")
                            })
                            .unwrap_or_default();
                        // An argument of other layers (`mask_zero` on Dense): say whose.
                        let owners: Vec<&str> = crate::registry()
                            .into_iter()
                            .filter(|e| {
                                e.args.iter().any(|a| a.name == *n || a.aliases.contains(n))
                            })
                            .map(|e| e.class)
                            .collect();
                        let elsewhere = match owners.len() {
                            0 => String::new(),
                            1..=3 => format!("`{n}` is an argument of {}; ", owners.join(", ")),
                            k => format!("`{n}` is an argument of {k} other layers; "),
                        };
                        let hint = if hint.is_empty() { elsewhere } else { hint };
                        return Err(SpecError::layer(if table.is_empty() {
                            format!("{class} takes no arguments, but gets `{n}`; {hint}")
                                .trim_end_matches("; ")
                                .to_string()
                        } else {
                            format!(
                                "{class} has no argument `{n}`; {hint}its arguments are: {}",
                                names.join(", ")
                            )
                        })
                        .at(w));
                    }
                },
            };
            if values[i].is_some() {
                return Err(SpecError::arg(
                    table[i].name,
                    format!("{class} gets `{}` twice", table[i].name),
                )
                .at(w));
            }
            values[i] = Some(value.clone());
            written[i] = Some(w);
        }
        for (def, v) in table.iter().zip(&values) {
            if v.is_none() && def.default == Default::Required {
                return Err(SpecError::layer(format!(
                    "{class} needs `{}` ({})",
                    def.name,
                    def.kind.describe()
                )));
            }
        }
        Ok(Args { class, table, values, written })
    }

    /// Which written argument gave table row `name`, if one did.
    pub fn written_index(&self, name: &str) -> Option<usize> {
        self.table.iter().position(|a| a.name == name).and_then(|i| self.written[i])
    }

    /// The class these arguments were bound for.
    pub fn class(&self) -> &'static str {
        self.class
    }

    fn def(&self, name: &str) -> (&'static str, Option<Value>) {
        let i = self.table.iter().position(|a| a.name == name).unwrap_or_else(|| {
            panic!("kiln-spec: {} reads `{name}`, which its table lacks", self.class)
        });
        let def = &self.table[i];
        (def.name, self.values[i].clone().or_else(|| def.default.value()))
    }

    fn wrong(&self, name: &'static str, v: &Value, want: &str) -> SpecError {
        let e = SpecError::arg(name, format!("{} `{name}` must be {want}, got {v}", self.class));
        match self.written_index(name) {
            Some(w) => e.at(w),
            None => e,
        }
    }

    /// Whether the argument was written (or has a default value).
    pub fn has(&self, name: &str) -> bool {
        self.def(name).1.is_some()
    }

    /// A whole number ≥ 0.
    pub fn count(&self, name: &str) -> Result<usize, SpecError> {
        let (n, v) = self.def(name);
        match v {
            Some(Value::Int(i)) if i >= 0 => usize::try_from(i)
                .map_err(|_| SpecError::arg(n, format!("{} `{n}` is too large", self.class))),
            Some(v) => Err(self.wrong(n, &v, "a whole number ≥ 0")),
            None => Err(SpecError::arg(n, format!("{} needs `{n}`", self.class))),
        }
    }

    /// An optional whole number (absent: `None`).
    pub fn count_opt(&self, name: &str) -> Result<Option<usize>, SpecError> {
        if self.has(name) { self.count(name).map(Some) } else { Ok(None) }
    }

    /// A number.
    pub fn number(&self, name: &str) -> Result<f64, SpecError> {
        let (n, v) = self.def(name);
        match v {
            Some(Value::Int(i)) => Ok(i as f64),
            Some(Value::Float(f)) => Ok(f),
            Some(v) => Err(self.wrong(n, &v, "a number")),
            None => Err(SpecError::arg(n, format!("{} needs `{n}`", self.class))),
        }
    }

    /// `true` or `false`.
    pub fn bool(&self, name: &str) -> Result<bool, SpecError> {
        let (n, v) = self.def(name);
        match v {
            Some(Value::Bool(b)) => Ok(b),
            Some(v) => Err(self.wrong(n, &v, "`true` or `false`")),
            None => Err(SpecError::arg(n, format!("{} needs `{n}`", self.class))),
        }
    }

    /// A whole number `k` (read as `(k, k)`) or a pair; `None` when absent.
    pub fn pair_opt(&self, name: &str) -> Result<Option<(usize, usize)>, SpecError> {
        let (n, v) = self.def(name);
        let one = |v: &Value| match v {
            Value::Int(i) if *i >= 0 => usize::try_from(*i).ok(),
            _ => None,
        };
        match v {
            None => Ok(None),
            Some(Value::List(l)) if l.len() == 2 => match (one(&l[0]), one(&l[1])) {
                (Some(a), Some(b)) => Ok(Some((a, b))),
                _ => Err(self.wrong(n, &Value::List(l), "a pair of whole numbers")),
            },
            Some(v) => one(&v)
                .map(|k| Some((k, k)))
                .ok_or_else(|| self.wrong(n, &v, "a whole number or a pair `(h, w)`")),
        }
    }

    /// A whole number, also accepted as a one-element tuple `(k,)` (Keras's 1-D form).
    pub fn count_or_single(&self, name: &str) -> Result<Option<usize>, SpecError> {
        let (n, v) = self.def(name);
        match v {
            None => Ok(None),
            Some(Value::List(l)) if l.len() == 1 => match l[0] {
                Value::Int(i) if i >= 0 => Ok(usize::try_from(i).ok()),
                _ => Err(self.wrong(n, &Value::List(l), "a whole number")),
            },
            Some(Value::Int(i)) if i >= 0 => Ok(usize::try_from(i).ok()),
            Some(v) => Err(self.wrong(n, &v, "a whole number")),
        }
    }

    /// A list of whole numbers.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>, SpecError> {
        let (n, v) = self.def(name);
        match v {
            Some(Value::List(l)) => l
                .iter()
                .map(|x| match x {
                    Value::Int(i) if *i >= 0 => usize::try_from(*i).ok(),
                    _ => None,
                })
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| self.wrong(n, &Value::List(l.clone()), "an array of whole numbers")),
            Some(v) => Err(self.wrong(n, &v, "an array of whole numbers such as [7, 7, 16]")),
            None => Err(SpecError::arg(n, format!("{} needs `{n}`", self.class))),
        }
    }

    /// A layer argument: its class and written arguments.
    pub fn layer(&self, name: &str) -> Result<(String, OwnedArgs), SpecError> {
        let (n, v) = self.def(name);
        match v {
            Some(Value::Layer(class, args)) => Ok((class, args)),
            Some(v) => Err(self.wrong(n, &v, "a layer such as LSTM(64)")),
            None => Err(SpecError::arg(n, format!("{} needs `{n}`", self.class))),
        }
    }

    /// A name from `valid`, with "did you mean" when it is not one of them.
    pub fn choice(&self, name: &str, what: &str, valid: &[&str]) -> Result<String, SpecError> {
        let (n, v) = self.def(name);
        match v {
            Some(Value::Name(s)) => {
                if valid.contains(&s.as_str()) {
                    Ok(s)
                } else {
                    let hint = did_you_mean(&s, valid)
                        .map(|h| format!("did you mean `{h}`? "))
                        .unwrap_or_default();
                    let e = SpecError::arg(
                        n,
                        format!("unknown {what} `{s}`; {hint}valid: {}", valid.join(", ")),
                    );
                    Err(match self.written_index(n) {
                        Some(w) => e.at(w),
                        None => e,
                    })
                }
            }
            Some(v) => Err(self.wrong(n, &v, &format!("a name, one of: {}", valid.join(", ")))),
            None => Err(SpecError::arg(n, format!("{} needs `{n}`", self.class))),
        }
    }
}
