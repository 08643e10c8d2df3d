//! Host bindings generated from `wit/`.

wasmtime::component::bindgen!({
    world: "reducer-component",
    path: "../wit",
});

pub(crate) use exports::eventlogs::reducer::reducer as wit;
