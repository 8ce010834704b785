//! The HTTP facade over `subscriber-store`: routing, wire types, auth and
//! error mapping. Not built yet: see issue 4; this crate is a placeholder so
//! the workspace has its final shape.
