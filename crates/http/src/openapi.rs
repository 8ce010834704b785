//! The OpenAPI 3 document served at `/openapi.json`: every route, body,
//! response and error shape. A test checks it names every routed path.

use bytes::Bytes;
use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDto"}}}
    })
}

fn data_of(schema: &str) -> Value {
    json!({
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"$ref": format!("#/components/schemas/{schema}")}}
    })
}

fn ok(description: &str, schema: &str, with_etag: bool) -> Value {
    let mut response = json!({
        "description": description,
        "content": {"application/json": {"schema": data_of(schema)}}
    });
    if with_etag {
        response["headers"] = json!({
            "ETag": {"description": "The document's version `__v`, quoted", "schema": {"type": "string"}}
        });
    }
    response
}

fn common_errors(mut responses: Value, codes: &[(&str, &str)]) -> Value {
    for (code, description) in codes {
        responses[*code] = if *code == "422" {
            json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ValidationErrorDto"}}}
            })
        } else {
            error_response(description)
        };
    }
    responses
}

const SUBSCRIBER_ID_RULE: &str =
    "1 to 255 bytes of UTF-8, not only whitespace, without control characters";

/// `maxLength` counts characters and the limit is in bytes: an id of 255
/// characters outside ASCII is within the schema and still refused (400).
fn subscriber_id_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
        "description": SUBSCRIBER_ID_RULE
    })
}

const AUTH: (&str, &str) = ("401", "Missing, malformed or unknown API key");
const SERVER: (&str, &str) = ("500", "Internal error; `errorId` is in the server log");
const BAD_ID: (&str, &str) = (
    "400",
    "Malformed subscriberId, idempotency key, If-Match or JSON body",
);

fn params(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"$ref": format!("#/components/parameters/{n}")}))
            .collect(),
    )
}

/// The document.
pub fn document() -> Value {
    let write_errors = [
        BAD_ID,
        AUTH,
        ("408", "The body did not arrive within the body timeout"),
        ("413", "Body larger than the limit (256 KiB by default)"),
        (
            "422",
            "Validation failed, or the idempotency key was used for another request",
        ),
        SERVER,
    ];
    let presence = json!({
        "operationId": "SubscribersV1Controller_updateSubscriberOnlineFlag",
        "summary": "Update subscriber online status",
        "tags": ["Subscribers"],
        "parameters": params(&["subscriberId", "idempotencyKey", "ifMatch"]),
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UpdateSubscriberOnlineFlagRequestDto"}}}},
        "responses": common_errors(
            json!({"200": ok("The subscriber as stored after the write", "SubscriberResponseDto", true)}),
            &[write_errors.as_slice(), &[("404", "Subscriber not found"), ("412", "If-Match does not match `__v`")]].concat(),
        )
    });
    let create = |operation: &str, v2: bool| {
        let mut parameters = params(&["idempotencyKey", "ifMatch"]);
        if v2 {
            if let Some(list) = parameters.as_array_mut() {
                list.push(json!({"name": "failIfExists", "in": "query", "required": false, "schema": {"type": "boolean"}}));
            }
        }
        json!({
            "operationId": operation,
            "summary": "Create a subscriber, or update the given fields if it exists",
            "tags": ["Subscribers"],
            "parameters": parameters,
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateSubscriberRequestDto"}}}},
            "responses": common_errors(
                json!({"201": ok("The subscriber as stored", "SubscriberResponseDto", true)}),
                &[write_errors.as_slice(), &[("409", "failIfExists=true and the subscriber exists"), ("412", "If-Match does not match `__v`")]].concat(),
            )
        })
    };
    let retrieve = |operation: &str| {
        json!({
            "operationId": operation,
            "summary": "Retrieve a subscriber",
            "tags": ["Subscribers"],
            "parameters": params(&["subscriberId"]),
            "responses": common_errors(
                json!({"200": ok("The subscriber", "SubscriberResponseDto", true)}),
                &[BAD_ID, AUTH, ("404", "Subscriber not found"), SERVER],
            )
        })
    };
    let delete = |operation: &str| {
        json!({
            "operationId": operation,
            "summary": "Delete a subscriber",
            "tags": ["Subscribers"],
            "parameters": params(&["subscriberId", "ifMatch"]),
            "responses": common_errors(
                json!({"200": ok("Deleted", "RemoveSubscriberResponseDto", false)}),
                &[BAD_ID, AUTH, ("404", "Subscriber not found"), ("412", "If-Match does not match `__v`"), SERVER],
            )
        })
    };
    let feed_off = (
        "404",
        "The presence feed is off on this server (--presence-feed off)",
    );
    let bad_query = (
        "422",
        "A query parameter breaks its rule (not a whole number, out of range, given twice, or a cursor that is not a subscriber id); `errors` names it",
    );
    let events = json!({
        "operationId": "PresenceController_events",
        "summary": "Presence events after a cursor, as a page or live as server-sent events",
        "description": "Every change of a subscriber's presence, oldest first (beyond Novu). As JSON: a page after `after` (without it, from the oldest kept event); `next` is the cursor of the next page. With `Accept: text/event-stream`: the feed live, from `Last-Event-ID` (it wins over `after`), else `after`, else from now; each event is `id: <seq>`, `event: presence`, `data: <event JSON>`, and a `: keep-alive` comment follows every 15 s of silence. Events older than the retention are purged; a cursor before them is 410 (resynchronise from /v1/presence/online).",
        "tags": ["Presence"],
        "parameters": [
            {"name": "after", "in": "query", "required": false, "description": "Start after this seq (a decimal string, as `seq` and `next` give it)", "schema": seq_schema()},
            {"$ref": "#/components/parameters/limit"},
            {"name": "Last-Event-ID", "in": "header", "required": false, "description": "With `Accept: text/event-stream`: resume after this seq (what an SSE client sends on reconnect); wins over `after`. Empty: as absent", "schema": {"type": "string", "pattern": "^[0-9]{0,20}$"}}
        ],
        "responses": common_errors(
            json!({"200": {
                "description": "A page of events; or, with `Accept: text/event-stream`, the live stream (chunked, until the client leaves or the server shuts down)",
                "content": {
                    "application/json": {"schema": data_of("PresenceEventPageDto")},
                    "text/event-stream": {"schema": {"type": "string", "description": "Server-sent events: `id: <seq>\\nevent: presence\\ndata: <PresenceEventDto as JSON>\\n\\n` per event"}}
                }
            }}),
            &[AUTH, feed_off, ("410", "The cursor is older than the event retention; resynchronise from /v1/presence/online"), bad_query, SERVER],
        )
    });
    let online = json!({
        "operationId": "PresenceController_online",
        "summary": "Subscribers online now (or within the last `within` seconds), in subscriberId order",
        "description": "Lease-aware: a subscriber whose lease ran out is offline. `next` is the `after` of the next page, null on the last (beyond Novu).",
        "tags": ["Presence"],
        "parameters": [
            {"name": "after", "in": "query", "required": false, "description": "Start after this subscriberId (percent-encoded); the path id's rule applies", "schema": subscriber_id_schema()},
            {"$ref": "#/components/parameters/limit"},
            {"name": "within", "in": "query", "required": false, "description": "Also list subscribers whose lastOnlineAt is at most this many seconds ago (Novu's \"online in the last N\" step filter)", "schema": {"type": "integer", "minimum": 1, "maximum": subscriber_store::MAX_WITHIN_SECONDS}}
        ],
        "responses": common_errors(
            json!({"200": ok("A page of subscriber documents", "OnlinePageDto", false)}),
            &[AUTH, feed_off, bad_query, SERVER],
        )
    });
    let stats = json!({
        "operationId": "PresenceController_stats",
        "summary": "Exact counts: subscribers online now, and all subscribers",
        "tags": ["Presence"],
        "responses": common_errors(
            json!({"200": ok("The counts", "PresenceStatsDto", false)}),
            &[AUTH, feed_off, SERVER],
        )
    });
    let environment_me = json!({
        "operationId": "EnvironmentsControllerV1_getCurrentEnvironment",
        "summary": "The API key's environment, with its application identifier",
        "tags": ["Environments"],
        "responses": common_errors(
            json!({"200": ok("The environment", "EnvironmentDto", false)}),
            &[AUTH, SERVER],
        )
    });
    let inbox_session = json!({
        "operationId": "InboxController_sessionInitialize",
        "summary": "Start an Inbox session: the subscriber is created if missing, and a session token answered",
        "description": "No API key: `applicationIdentifier` names the environment (GET /v1/environments/me shows it). While the server requires it (--inbox-hmac on, the default), `subscriberHash` is the lowercase hex HMAC-SHA256 of the subscriberId keyed with one of the environment's API keys. An existing subscriber is not changed. A top-level `subscriberId` is read when `subscriber` has none (older clients).",
        "tags": ["Inbox"],
        "security": [],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionRequestDto"}}}},
        "responses": common_errors(
            json!({"201": ok("The session", "SessionResponseDto", false)}),
            &[
                ("400", "Not JSON; or `Please provide a valid app identifier` (no environment has it); or `Please provide a valid HMAC hash` (missing or wrong subscriberHash)"),
                ("404", "Inbox sessions are off: the server has no server key"),
                ("408", "The body did not arrive within the body timeout"),
                ("413", "Body larger than the limit (256 KiB by default)"),
                ("422", "A member of the body has the wrong type or breaks its rule; `errors` names it"),
                SERVER,
            ],
        )
    });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "subscriberd",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Novu-compatible subscriber presence API"
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/v1/subscribers/{subscriberId}/online-status": {"patch": presence},
            "/v1/subscribers": {"post": create("SubscribersV1Controller_createSubscriber", false)},
            "/v2/subscribers": {"post": create("SubscribersController_createSubscriber", true)},
            "/v1/subscribers/{subscriberId}": {
                "get": retrieve("SubscribersV1Controller_getSubscriber"),
                "delete": delete("SubscribersV1Controller_removeSubscriber")
            },
            "/v2/subscribers/{subscriberId}": {
                "get": retrieve("SubscribersController_getSubscriber"),
                "delete": delete("SubscribersController_removeSubscriber")
            },
            "/v1/presence/events": {"get": events},
            "/v1/presence/online": {"get": online},
            "/v1/presence/stats": {"get": stats},
            "/v1/environments/me": {"get": environment_me},
            "/v1/inbox/session": {"post": inbox_session},
            "/v1/health-check": {"get": {
                "operationId": "HealthController_healthCheck",
                "summary": "Health check",
                "security": [],
                "responses": common_errors(
                    json!({"200": ok("The server is up and its store can write", "HealthDto", false)}),
                    &[("503", "The store cannot write (disk full, I/O error); it reopens by itself once the cause is gone")],
                )
            }},
            "/ready": {"get": {
                "operationId": "ready",
                "summary": "Readiness (beyond Novu): 200 once the server may take writes",
                "security": [],
                "responses": common_errors(
                    json!({"200": {"description": "Started, the store can write, not draining", "content": {"application/json": {"schema": {"type": "object", "properties": {"data": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ready"]}}}}}}}}}),
                    &[("503", "Starting (opening the store, expiring the leases that ran out while it was down), draining after SIGTERM, or the store cannot write")],
                )
            }},
            "/metrics": {"get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (beyond Novu), text exposition format; 404 with --metrics off or --metrics-listen",
                "security": [],
                "responses": {
                    "200": {"description": "The metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "404": {"description": "Metrics are off, or served on another address", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDto"}}}}
                }
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3 document", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "`ApiKey <key>`"}
            },
            "parameters": {
                "limit": {"name": "limit", "in": "query", "required": false, "description": "Page size", "schema": {"type": "integer", "minimum": 1, "maximum": subscriber_store::MAX_PAGE, "default": subscriber_store::DEFAULT_PAGE}},
                "subscriberId": {"name": "subscriberId", "in": "path", "required": true, "description": SUBSCRIBER_ID_RULE, "schema": subscriber_id_schema()},
                "idempotencyKey": {"name": "idempotency-key", "in": "header", "required": false, "description": "1 to 255 visible ASCII characters (a quoted string is unquoted); the same key and request replays the first outcome", "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"}},
                "ifMatch": {"name": "If-Match", "in": "header", "required": false, "description": "RFC 9110: apply only if the document exists and `__v` matches. `*` matches any existing document; a list of entity tags (`\"3\", \"4\"`) matches if any member is `\"<__v>\"`; a weak tag (`W/\"3\"`) never matches; a bare number (`3`) counts as `\"3\"`. Not a list of entity tags: 400", "schema": {"type": "string", "pattern": IF_MATCH_PATTERN}}
            },
            "schemas": schemas()
        }
    })
}

/// An event seq as the wire carries it: a decimal string (a u64 does not
/// fit a JavaScript number).
fn seq_schema() -> Value {
    json!({"type": "string", "pattern": "^[0-9]{1,20}$"})
}

/// What `extract::if_match` accepts: `*`, or a comma-separated list
/// (empty members allowed) of entity tags or bare version numbers.
const IF_MATCH_PATTERN: &str =
    r#"^[ \t,]*(\*|((W/)?"[!#-~]*"|[0-9]+)([ \t,]*,[ \t,]*((W/)?"[!#-~]*"|[0-9]+))*)[ \t,]*$"#;

fn schemas() -> Value {
    let string = json!({"type": "string"});
    // Optional create fields take null: on a create it leaves the field
    // unset, on an upsert it clears it (Novu's Python SDKs send it).
    let nullable_string = json!({"type": "string", "nullable": true});
    let credentials = json!({
        "type": "object",
        "properties": {
            "webhookUrl": string, "channel": string,
            "deviceTokens": {"type": "array", "items": string},
            "alertUid": string, "title": string, "imageUrl": string, "state": string, "externalUrl": string
        }
    });
    let provider = json!({"type": "string", "enum": subscriber_store::PROVIDER_IDS});
    let mut older_subscriber_id = subscriber_id_schema();
    older_subscriber_id["deprecated"] = json!(true);
    older_subscriber_id["description"] =
        json!("Older clients' place for the id; read when `subscriber` has none");
    json!({
        "UpdateSubscriberOnlineFlagRequestDto": {
            "type": "object",
            "required": ["isOnline"],
            "properties": {
                "isOnline": {"type": "boolean"},
                "ttlSeconds": {
                    "type": "integer",
                    "nullable": true,
                    "minimum": 0,
                    "maximum": subscriber_store::MAX_TTL_SECONDS,
                    "description": "Presence lease (beyond Novu): going online, the subscriber goes offline by itself this many seconds after this write unless another online write (a heartbeat) comes first. 0: no lease. Absent or null: the server default (--presence-ttl-secs). Ignored when going offline."
                }
            }
        },
        "CreateSubscriberRequestDto": {
            "type": "object",
            "required": ["subscriberId"],
            "properties": {
                "subscriberId": subscriber_id_schema(),
                "firstName": nullable_string, "lastName": nullable_string,
                "email": nullable_string,
                "phone": nullable_string, "avatar": nullable_string, "locale": nullable_string, "timezone": nullable_string,
                "data": {"type": "object", "nullable": true, "additionalProperties": true},
                "channels": {"type": "array", "nullable": true, "items": {
                    "type": "object",
                    "required": ["providerId"],
                    "properties": {"providerId": provider, "integrationIdentifier": string, "credentials": credentials}
                }}
            }
        },
        "SessionRequestDto": {
            "type": "object",
            "required": ["applicationIdentifier"],
            "properties": {
                "applicationIdentifier": {"type": "string", "description": "The environment's identifier (GET /v1/environments/me)"},
                "subscriber": {
                    "type": "object",
                    "nullable": true,
                    "properties": {
                        "subscriberId": subscriber_id_schema(),
                        "firstName": nullable_string, "lastName": nullable_string,
                        "email": nullable_string,
                        "phone": nullable_string, "avatar": nullable_string, "locale": nullable_string, "timezone": nullable_string,
                        "data": {"type": "object", "nullable": true, "additionalProperties": true}
                    }
                },
                "subscriberId": older_subscriber_id,
                "subscriberHash": {"type": "string", "nullable": true, "pattern": "^[0-9a-f]{64}$", "description": "Lowercase hex HMAC-SHA256 of the subscriberId, keyed with one of the environment's API keys"}
            }
        },
        "SessionResponseDto": {
            "type": "object",
            "required": ["token", "totalUnreadCount", "removeNovuBranding", "isDevelopmentMode", "applicationIdentifier"],
            "properties": {
                "token": {"type": "string", "description": "A JWT (HS256) naming the environment, its organization and the subscriber; it expires (--inbox-token-ttl-secs)"},
                "totalUnreadCount": {"type": "integer", "minimum": 0},
                "removeNovuBranding": {"type": "boolean"},
                "isDevelopmentMode": {"type": "boolean", "description": "Whether the environment is the one named Development"},
                "applicationIdentifier": string
            }
        },
        "EnvironmentDto": {
            "type": "object",
            "required": ["_id", "name", "identifier", "_organizationId"],
            "properties": {
                "_id": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
                "name": string,
                "identifier": {"type": "string", "description": "The public application identifier the Inbox is given; no secret, it grants nothing alone"},
                "_organizationId": {"type": "string", "pattern": "^[0-9a-f]{24}$"}
            }
        },
        "ChannelCredentials": credentials,
        "ChannelSettingsDto": {
            "type": "object",
            "required": ["providerId", "credentials", "_integrationId"],
            "properties": {
                "providerId": provider,
                "integrationIdentifier": string,
                "credentials": {"$ref": "#/components/schemas/ChannelCredentials"},
                "_integrationId": string
            }
        },
        "SubscriberResponseDto": {
            "type": "object",
            "required": ["_id", "subscriberId", "channels", "_organizationId", "_environmentId", "deleted", "createdAt", "updatedAt", "__v"],
            "properties": {
                "_id": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
                "firstName": string, "lastName": string,
                "email": {"type": "string", "nullable": true},
                "phone": string, "avatar": string, "locale": string,
                "subscriberId": string,
                "channels": {"type": "array", "items": {"$ref": "#/components/schemas/ChannelSettingsDto"}},
                "topics": {"type": "array", "items": string, "deprecated": true},
                "isOnline": {"type": "boolean"},
                "lastOnlineAt": {"type": "string", "format": "date-time"},
                "onlineExpiresAt": {"type": "string", "format": "date-time", "description": "While a presence lease runs (beyond Novu): when the subscriber goes offline without another heartbeat."},
                "_organizationId": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
                "_environmentId": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
                "deleted": {"type": "boolean"},
                "createdAt": {"type": "string", "format": "date-time"},
                "updatedAt": {"type": "string", "format": "date-time"},
                "__v": {"type": "integer", "minimum": 0},
                "data": {"type": "object", "nullable": true, "additionalProperties": true},
                "timezone": string
            }
        },
        "PresenceEventDto": {
            "type": "object",
            "required": ["seq", "subscriberId", "isOnline", "lastOnlineAt", "__v", "at", "cause"],
            "properties": {
                "seq": seq_schema(),
                "subscriberId": string,
                "isOnline": {"type": "boolean"},
                "lastOnlineAt": {"type": "string", "format": "date-time", "nullable": true},
                "__v": {"type": "integer", "minimum": 0, "description": "The document's version after the change (the last version, for a delete)"},
                "at": {"type": "string", "format": "date-time"},
                "cause": {"type": "string", "enum": ["write", "expired", "deleted", "connected", "disconnected"]}
            }
        },
        "PresenceEventPageDto": {
            "type": "object",
            "required": ["events", "next"],
            "properties": {
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/PresenceEventDto"}},
                "next": {"type": "string", "pattern": "^[0-9]{1,20}$", "description": "The last event's seq, else the `after` given, else the last purged seq (\"0\" while nothing was purged); passed back as `after`, never a 410 for a reader that missed nothing"}
            }
        },
        "OnlinePageDto": {
            "type": "object",
            "required": ["subscribers", "next"],
            "properties": {
                "subscribers": {"type": "array", "items": {"$ref": "#/components/schemas/SubscriberResponseDto"}},
                "next": {"type": "string", "nullable": true, "description": "The `after` of the next page; null on the last"}
            }
        },
        "PresenceStatsDto": {
            "type": "object",
            "required": ["online", "subscribers"],
            "properties": {"online": {"type": "integer", "minimum": 0}, "subscribers": {"type": "integer", "minimum": 0}}
        },
        "RemoveSubscriberResponseDto": {
            "type": "object",
            "required": ["acknowledged", "status"],
            "properties": {"acknowledged": {"type": "boolean"}, "status": {"type": "string", "enum": ["deleted"]}}
        },
        "HealthDto": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["ok"]}}
        },
        "ErrorDto": error_dto(json!({"errorId": {"type": "string", "format": "uuid"}})),
        "ValidationErrorDto": error_dto(json!({"errors": {"type": "object", "additionalProperties": {
            "type": "object",
            "required": ["messages"],
            "properties": {"messages": {"type": "array", "items": string}, "value": {}}
        }}}))
    })
}

/// The error shape of SPEC section 5, with its extra properties.
fn error_dto(extra: Value) -> Value {
    let mut properties = json!({
        "statusCode": {"type": "integer"},
        "timestamp": {"type": "string", "format": "date-time"},
        "path": {"type": "string"},
        "message": {"type": "string"},
        "error": {"type": "string"}
    });
    if let (Some(all), Some(more)) = (properties.as_object_mut(), extra.as_object()) {
        all.extend(more.clone());
    }
    json!({
        "type": "object",
        "required": ["statusCode", "timestamp", "path", "message", "error"],
        "properties": properties
    })
}

/// The document as the bytes `/openapi.json` serves.
pub(crate) fn document_bytes() -> Bytes {
    Bytes::from(serde_json::to_vec(&document()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_routed_path_and_method_is_documented() {
        let doc = document();
        for (method, pattern, _) in crate::router::ROUTES {
            let operation = &doc["paths"][*pattern][method.as_str().to_lowercase()];
            assert!(
                operation.is_object(),
                "{method} {pattern} is not in the OpenAPI document"
            );
            assert!(
                operation["responses"].is_object(),
                "{method} {pattern} has no responses"
            );
        }
        let documented: usize = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|ops| ops.as_object().expect("operations").len())
            .sum();
        assert_eq!(
            documented,
            crate::router::ROUTES.len(),
            "the document names routes the router does not serve"
        );
    }
}
