-- The anchor of benches/run.sh's PostgreSQL section: a keyed presence
-- write as one would write it by hand (record a fresh idempotency key,
-- update the subscriber's document), over -D rows=N documents.
\set id random(1, :rows)
BEGIN;
INSERT INTO bench_records (key, record, expires_at) VALUES (gen_random_uuid()::text, repeat('r', 300), 0);
UPDATE bench_docs SET version = version + 1, doc = repeat('d', 300) WHERE id = :id AND version = version;
END;
