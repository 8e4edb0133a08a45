//! Building a kiln network from a Keras model config: the JSON of `model.to_json()`
//! (or the `config.json` inside a `.keras` file), Sequential or functional.
//!
//! Every layer is built from its Keras class name and the config keys its kiln-spec
//! table knows (`filters`, `kernel_size`, `padding`, ...), exactly as `model!` would
//! build it from written arguments; a functional model's layers are connected through
//! each layer's `inbound_nodes`, merges (`Add`, `Concatenate`, ...) included. Layer
//! names are Keras's, so a checkpoint of the Keras model's weights (`conv2d/kernel`,
//! ...) maps by name. Initializers are not read: the weights are drawn from the seed,
//! to be overwritten by the recorded ones. A layer kiln does not have, or a config it
//! cannot follow, is an error naming the layer.

use crate::Seed;
use crate::error::{Error, Result};
use crate::sequential::{FunctionalBuilder, Sequential, SequentialBuilder};
use kiln_spec::Value as W;
use kiln_tape::Scalar;
use serde_json::Value;

fn bad(what: impl Into<String>) -> Error {
    Error::Layer { layer: "Keras model config".into(), message: what.into() }
}

/// A Keras config value as a written argument; `None` where kiln has no literal for it
/// (`null`, and objects that are not layers: initializers, regularizers, dtypes).
fn written(v: &Value) -> Option<W> {
    Some(match v {
        Value::Bool(b) => W::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => W::Int(i),
            None => W::Float(n.as_f64()?),
        },
        Value::String(s) => W::name(s),
        Value::Array(a) => W::List(a.iter().map(written).collect::<Option<_>>()?),
        // A wrapped layer (`Bidirectional`'s `layer`): its config bound the same way.
        Value::Object(o) => {
            let class = o.get("class_name")?.as_str()?;
            let entry = kiln_spec::lookup(class)?;
            let cfg = o.get("config")?;
            W::Layer(class.to_string(), args_of(entry.args, cfg))
        }
        Value::Null => return None,
    })
}

/// The arguments of built-in layer `class` in a Keras layer config (its `config`
/// object): every key the layer's kiln-spec table knows, as written arguments, the
/// others (initializers, regularizers, dtypes) left out. `None` for a class kiln does
/// not have.
pub fn config_args(class: &str, config: &Value) -> Option<Vec<(Option<String>, W)>> {
    kiln_spec::lookup(class).map(|e| args_of(e.args, config))
}

/// The config keys a layer's argument table knows, as written arguments.
fn args_of(table: &[kiln_spec::ArgDef], cfg: &Value) -> Vec<(Option<String>, W)> {
    table
        .iter()
        .filter_map(|a| Some((Some(a.name.to_string()), written(cfg.get(a.name)?)?)))
        .collect()
}

/// One layer of the config, built.
enum Built<T: Scalar> {
    Layer(Box<dyn crate::layers::Layer<T>>),
    Merge(kiln_spec::Merge),
}

fn build_layer<T: Scalar>(class: &str, cfg: &Value) -> Result<Built<T>> {
    if let Some(m) = kiln_spec::merge_lookup(class) {
        let given: Vec<(Option<&str>, W)> = m
            .args
            .iter()
            .filter_map(|a| Some((Some(a.name), written(cfg.get(a.name)?)?)))
            .collect();
        let merge = kiln_spec::Merge::from_written(class, &given)
            .map_err(|e| Error::Layer { layer: class.into(), message: e.message })?;
        return Ok(Built::Merge(merge));
    }
    let entry = kiln_spec::lookup(class);
    let owned = entry.map(|e| args_of(e.args, cfg)).unwrap_or_default();
    let given: Vec<(Option<&str>, W)> =
        owned.iter().map(|(n, v)| (n.as_deref(), v.clone())).collect();
    Ok(Built::Layer(crate::layers::builtin::<T>(class, &given)?))
}

/// The per-sample shape of a `batch_shape` / `batch_input_shape` (the batch axis dropped).
fn sample_shape(v: &Value) -> Option<Vec<usize>> {
    let dims = v.as_array()?;
    dims.get(1..)?.iter().map(|d| d.as_u64().map(|d| d as usize)).collect()
}

fn name_of(layer: &Value) -> Result<&str> {
    layer
        .get("config")
        .and_then(|c| c.get("name"))
        .or_else(|| layer.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a layer has no name"))
}

/// The layers feeding a functional model's layer: the `keras_history` names of its
/// first call's tensors (one tensor, or a list of them for a merge).
fn inbound(layer: &Value) -> Result<Vec<String>> {
    let name = name_of(layer)?;
    let nodes = layer.get("inbound_nodes").and_then(Value::as_array).ok_or_else(|| {
        bad(format!("layer `{name}` has no inbound_nodes; is this a functional model's config?"))
    })?;
    let Some(first) = nodes.first() else { return Ok(Vec::new()) };
    if nodes.len() > 1 {
        return Err(bad(format!(
            "layer `{name}` is called {} times (shared weights); kiln networks call each layer once",
            nodes.len()
        )));
    }
    let mut out = Vec::new();
    let mut stack: Vec<&Value> =
        first.get("args").and_then(Value::as_array).map_or(Vec::new(), |a| a.iter().collect());
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter().rev()),
            Value::Object(o) => {
                let h =
                    o.get("config").and_then(|c| c.get("keras_history")).and_then(Value::as_array);
                if let Some(from) = h.and_then(|h| h.first()).and_then(Value::as_str) {
                    out.push(from.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Builds the network a Keras model config describes (`model.to_json()`), with its
/// weights drawn from `seed`: a `Sequential` config as a stack, a `Functional` one as
/// its graph. Returns an error for a layer kiln does not have, a shared layer, several
/// inputs or outputs, or a shape that does not fit.
pub fn from_json<T: Scalar>(json: &str, seed: Seed) -> Result<Sequential<T>> {
    let root: Value = serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let class = root.get("class_name").and_then(Value::as_str).unwrap_or("");
    let cfg = root.get("config").ok_or_else(|| bad("no `config`"))?;
    let name = cfg.get("name").and_then(Value::as_str).unwrap_or("model");
    let layers =
        cfg.get("layers").and_then(Value::as_array).ok_or_else(|| bad("no `config.layers`"))?;
    let input_of = |l: &Value| {
        let c = l.get("config")?;
        sample_shape(c.get("batch_shape").or_else(|| c.get("batch_input_shape"))?)
    };
    match class {
        "Sequential" => {
            let shape = layers
                .iter()
                .find(|l| l.get("class_name").and_then(Value::as_str) == Some("InputLayer"))
                .and_then(input_of)
                .or_else(|| cfg.get("build_input_shape").and_then(sample_shape))
                .ok_or_else(|| bad("the Sequential config gives no input shape"))?;
            let mut b = SequentialBuilder::<T>::new(name, &shape);
            for l in layers {
                let class = l.get("class_name").and_then(Value::as_str).unwrap_or("");
                if class == "InputLayer" {
                    continue;
                }
                let lname = name_of(l)?;
                match build_layer::<T>(class, &l["config"])? {
                    Built::Layer(layer) => b = b.add_named_boxed(lname, layer),
                    Built::Merge(_) => {
                        return Err(bad(format!(
                            "a Sequential model cannot hold the merge `{lname}`"
                        )));
                    }
                }
            }
            b.build(seed)
        }
        "Functional" | "Model" => {
            let inputs: Vec<&Value> = layers
                .iter()
                .filter(|l| l.get("class_name").and_then(Value::as_str) == Some("InputLayer"))
                .collect();
            let [input] = inputs[..] else {
                return Err(bad(format!(
                    "the model has {} inputs; kiln networks take one",
                    inputs.len()
                )));
            };
            let outputs = cfg
                .get("output_layers")
                .and_then(Value::as_array)
                .map_or(0, |o| if o.first().is_some_and(Value::is_array) { o.len() } else { 1 });
            if outputs > 1 {
                return Err(bad(format!(
                    "the model has {outputs} outputs; kiln networks give one"
                )));
            }
            let shape =
                input_of(input).ok_or_else(|| bad("the InputLayer gives no batch_shape"))?;
            let input_name = name_of(input)?.to_string();
            let mut b = FunctionalBuilder::<T>::new(name, &shape);
            for l in layers {
                let class = l.get("class_name").and_then(Value::as_str).unwrap_or("");
                if class == "InputLayer" {
                    continue;
                }
                let lname = name_of(l)?;
                let from: Vec<String> = inbound(l)?
                    .into_iter()
                    .map(|n| if n == input_name { "input_layer".to_string() } else { n })
                    .collect();
                let from: Vec<&str> = from.iter().map(String::as_str).collect();
                b = match build_layer::<T>(class, &l["config"])? {
                    Built::Layer(layer) => b.layer(lname, layer, &from),
                    Built::Merge(m) => b.merge(lname, m, &from),
                };
            }
            b.build(seed)
        }
        other => Err(bad(format!(
            "the config's class is `{other}`; kiln reads Keras's Sequential and Functional model configs"
        ))),
    }
}
