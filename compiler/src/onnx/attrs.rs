//! Typed access to ONNX node attributes.

use tract_onnx::pb;

/// A node's attributes.
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a>(&'a pb::NodeProto);

impl<'a> Attrs<'a> {
    pub fn new(n: &'a pb::NodeProto) -> Self {
        Attrs(n)
    }

    fn get(&self, name: &str) -> Option<&'a pb::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }

    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }

    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }

    pub fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.get(name).map(|a| a.floats.clone())
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    pub fn strings(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&'a pb::TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }

    /// Whether the attribute is a graph (control flow), which kiln does not import.
    pub fn graph(&self, name: &str) -> Option<&'a pb::GraphProto> {
        self.get(name).and_then(|a| a.g.as_ref())
    }
}
