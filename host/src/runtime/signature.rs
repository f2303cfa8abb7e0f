//! Type-checks a handler's exports against busbar's WIT when it is loaded,
//! without running any guest code: a component whose `handle` has another
//! shape (built against another version of the WIT, or by hand) is refused
//! like any bad handler, instead of trapping on every call.

use super::LoadError;
use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, ComponentNamedList, Lift, Lower};

/// Checks that `interface`'s `handle` export of `component` has the type the
/// host calls it with (`Params` → `Return`, the bindings' own types);
/// `expected` is that type as the WIT writes it, for the message.
pub(super) fn check<Params, Return>(
    engine: &Engine,
    component: &Component,
    interface: &'static str,
    expected: &str,
) -> Result<(), LoadError>
where
    Params: ComponentNamedList + Lower,
    Return: ComponentNamedList + Lift,
{
    let refused = |why: String| LoadError::Signature(interface, why);
    let ty = component.component_type();
    let Some(ComponentItem::ComponentInstance(instance)) = ty.get_export(engine, interface).map(|e| e.ty) else {
        return Err(refused("it is not an exported instance".into()));
    };
    let Some(ComponentItem::ComponentFunc(handle)) = instance.get_export(engine, "handle").map(|e| e.ty) else {
        return Err(refused(format!("it has no function `handle`; busbar expects `handle: {expected}`")));
    };
    // The same check wasmtime makes when the host looks the function up to call it.
    handle.typecheck::<Params, Return>(&ty.instance_type()).map_err(|_| {
        refused(format!(
            "its `handle` is `{}`; busbar expects `{expected}` (rebuild it against wit/handler.wit)",
            function(&handle)
        ))
    })
}

/// A function type written the way WIT writes it.
fn function(func: &ComponentFunc) -> String {
    let params: Vec<String> = func.params().map(|(name, ty)| format!("{name}: {}", written(&ty))).collect();
    let results: Vec<String> = func.results().map(|ty| written(&ty)).collect();
    match results.as_slice() {
        [] => format!("func({})", params.join(", ")),
        _ => format!("func({}) -> {}", params.join(", "), results.join(", ")),
    }
}

/// A value type written the way WIT writes it (named types by their kind).
fn written(ty: &Type) -> String {
    let or_blank = |t: Option<Type>| t.map_or_else(|| "_".to_string(), |t| written(&t));
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(list) => format!("list<{}>", written(&list.ty())),
        Type::Option(option) => format!("option<{}>", written(&option.ty())),
        Type::Result(result) => format!("result<{}, {}>", or_blank(result.ok()), or_blank(result.err())),
        Type::Tuple(tuple) => format!("tuple<{}>", tuple.types().map(|t| written(&t)).collect::<Vec<_>>().join(", ")),
        Type::Record(_) => "record".into(),
        Type::Variant(_) => "variant".into(),
        Type::Enum(_) => "enum".into(),
        Type::Flags(_) => "flags".into(),
        Type::Own(_) | Type::Borrow(_) => "resource".into(),
        other => format!("{other:?}").split(['(', ' ']).next().unwrap_or("?").to_lowercase(),
    }
}
