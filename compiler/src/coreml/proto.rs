//! The Core ML messages `--target coreml` writes, declared here from the
//! public specification's field numbers (`Model.proto`, `MIL.proto`,
//! `FeatureTypes.proto`): only the fields Kiln sets. A `oneof` member is an
//! optional field of the same number (the same bytes on the wire); maps are
//! `BTreeMap`s so that one model always gives the same bytes.

use std::collections::BTreeMap;

/// `Model`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Model {
    #[prost(int32, tag = "1")]
    pub specification_version: i32,
    #[prost(message, optional, tag = "2")]
    pub description: Option<ModelDescription>,
    /// `oneof Type { MILSpec.Program mlProgram = 502; }`
    #[prost(message, optional, tag = "502")]
    pub ml_program: Option<Program>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelDescription {
    #[prost(message, repeated, tag = "1")]
    pub input: Vec<FeatureDescription>,
    #[prost(message, repeated, tag = "10")]
    pub output: Vec<FeatureDescription>,
    #[prost(string, tag = "11")]
    pub predicted_feature_name: String,
    #[prost(string, tag = "12")]
    pub predicted_probabilities_name: String,
    #[prost(message, optional, tag = "100")]
    pub metadata: Option<Metadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    #[prost(string, tag = "1")]
    pub short_description: String,
    #[prost(string, tag = "2")]
    pub version_string: String,
    #[prost(string, tag = "3")]
    pub author: String,
    #[prost(string, tag = "4")]
    pub license: String,
    #[prost(btree_map = "string, string", tag = "100")]
    pub user_defined: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureDescription {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub short_description: String,
    #[prost(message, optional, tag = "3")]
    pub r#type: Option<FeatureType>,
}

/// An empty message (`Int64FeatureType`, `StringFeatureType`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// `FeatureType`: exactly one of the type fields is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureType {
    #[prost(message, optional, tag = "1")]
    pub int64_type: Option<Empty>,
    #[prost(message, optional, tag = "5")]
    pub multi_array_type: Option<ArrayFeatureType>,
    #[prost(message, optional, tag = "6")]
    pub dictionary_type: Option<DictionaryFeatureType>,
}

/// `ArrayFeatureType.ArrayDataType`.
pub const ARRAY_FLOAT32: i32 = 65568;
pub const ARRAY_INT32: i32 = 131104;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayFeatureType {
    #[prost(int64, repeated, tag = "1")]
    pub shape: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
}

/// `DictionaryFeatureType { oneof KeyType { int64KeyType = 1; } }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DictionaryFeatureType {
    #[prost(message, optional, tag = "1")]
    pub int64_key_type: Option<Empty>,
}

/// `MILSpec.Program`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Program {
    #[prost(int64, tag = "1")]
    pub version: i64,
    #[prost(btree_map = "string, message", tag = "2")]
    pub functions: BTreeMap<String, Function>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(message, repeated, tag = "1")]
    pub inputs: Vec<NamedValueType>,
    #[prost(string, tag = "2")]
    pub opset: String,
    #[prost(btree_map = "string, message", tag = "3")]
    pub block_specializations: BTreeMap<String, Block>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Block {
    #[prost(string, repeated, tag = "2")]
    pub outputs: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub operations: Vec<Operation>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(btree_map = "string, message", tag = "2")]
    pub inputs: BTreeMap<String, Argument>,
    #[prost(message, repeated, tag = "3")]
    pub outputs: Vec<NamedValueType>,
    #[prost(btree_map = "string, message", tag = "5")]
    pub attributes: BTreeMap<String, Value>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Argument {
    #[prost(message, repeated, tag = "1")]
    pub arguments: Vec<Binding>,
}

/// `Argument.Binding { oneof binding { string name = 1; Value value = 2; } }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Binding {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Value>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedValueType {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<ValueType>,
}

/// `ValueType`: one of a tensor, list or dictionary type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorType>,
    #[prost(message, optional, boxed, tag = "2")]
    pub list_type: Option<Box<ListType>>,
    #[prost(message, optional, boxed, tag = "4")]
    pub dictionary_type: Option<Box<DictionaryType>>,
}

/// `MILSpec.DataType`.
pub mod dtype {
    pub const STRING: i32 = 2;
    pub const FLOAT16: i32 = 10;
    pub const FLOAT32: i32 = 11;
    pub const FLOAT64: i32 = 12;
    pub const INT8: i32 = 21;
    pub const INT32: i32 = 23;
    pub const INT64: i32 = 24;
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorType {
    #[prost(int32, tag = "1")]
    pub data_type: i32,
    #[prost(int64, tag = "2")]
    pub rank: i64,
    #[prost(message, repeated, tag = "3")]
    pub dimensions: Vec<Dimension>,
}

/// `Dimension { oneof dimension { ConstantDimension constant = 1; } }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dimension {
    #[prost(message, optional, tag = "1")]
    pub constant: Option<ConstantDimension>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConstantDimension {
    #[prost(uint64, tag = "1")]
    pub size: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListType {
    #[prost(message, optional, tag = "1")]
    pub r#type: Option<ValueType>,
    #[prost(message, optional, tag = "2")]
    pub length: Option<Dimension>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DictionaryType {
    #[prost(message, optional, tag = "1")]
    pub key_type: Option<ValueType>,
    #[prost(message, optional, tag = "2")]
    pub value_type: Option<ValueType>,
}

/// `Value`: a type and either an immediate value or a place in a weight
/// blob file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<ValueType>,
    #[prost(message, optional, tag = "3")]
    pub immediate_value: Option<ImmediateValue>,
    #[prost(message, optional, tag = "5")]
    pub blob_file_value: Option<BlobFileValue>,
}

/// `Value.ImmediateValue { oneof value { TensorValue tensor = 1;
/// ListValue list = 3; } }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImmediateValue {
    #[prost(message, optional, tag = "1")]
    pub tensor: Option<TensorValue>,
    #[prost(message, optional, tag = "3")]
    pub list: Option<ListValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobFileValue {
    #[prost(string, tag = "1")]
    pub file_name: String,
    #[prost(uint64, tag = "2")]
    pub offset: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

/// `TensorValue`: exactly one of its repeated forms is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorValue {
    #[prost(message, optional, tag = "1")]
    pub floats: Option<RepeatedFloats>,
    #[prost(message, optional, tag = "2")]
    pub ints: Option<RepeatedInts>,
    #[prost(message, optional, tag = "3")]
    pub bools: Option<RepeatedBools>,
    #[prost(message, optional, tag = "4")]
    pub strings: Option<RepeatedStrings>,
    #[prost(message, optional, tag = "5")]
    pub long_ints: Option<RepeatedLongInts>,
    /// fp16 and int8 values, little-endian.
    #[prost(message, optional, tag = "7")]
    pub bytes: Option<RepeatedBytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RepeatedFloats {
    #[prost(float, repeated, tag = "1")]
    pub values: Vec<f32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RepeatedInts {
    #[prost(int32, repeated, tag = "1")]
    pub values: Vec<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RepeatedBools {
    #[prost(bool, repeated, tag = "1")]
    pub values: Vec<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RepeatedStrings {
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RepeatedLongInts {
    #[prost(int64, repeated, tag = "1")]
    pub values: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RepeatedBytes {
    #[prost(bytes = "vec", tag = "1")]
    pub values: Vec<u8>,
}
