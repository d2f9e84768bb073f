-- The PostgreSQL store, version 1: the same records as the sled store
-- (daemon/src/server/store.rs), shaped for N daemons sharing one library and
-- one queue (docs/scale-out.md).
--
-- Records stay what the neutral record stream of server/dump.rs carries: the
-- latent and job records as JSON (jsonb, so SQL can look inside), x_T and the
-- PNGs, specs and results as bytea. The other columns are derived from the
-- record when it is written, for the indexes that listing and claiming need;
-- the record is the truth, rewritten with them on every change.

-- Ids: one counter shared by latents and jobs, as in sled. A sequence hands out
-- ids to every daemon without a row lock, never the same twice (a rolled-back
-- transaction leaves a gap, as a failed sled write does). Its next value is the
-- `next_id` a migration carries over.
CREATE SEQUENCE ids AS bigint MINVALUE 0 START WITH 0;

CREATE TABLE latents (
    id           bigint PRIMARY KEY CHECK (id >= 0),
    -- LatentRecord (JSON, with its format version `v`).
    record       jsonb  NOT NULL,
    name         text   NOT NULL,
    lower_name   text   NOT NULL,
    tags         text[] NOT NULL DEFAULT '{}',
    created_ms   bigint NOT NULL,
    encode_steps integer NOT NULL,
    -- "encoded", "sampled", "interpolated", "imported" or "edited".
    origin       text   NOT NULL,
    -- The latents an edit was made from (ListLatents' parent filter).
    parents      bigint[] NOT NULL DEFAULT '{}',
    fingerprint  text   NOT NULL,
    -- The job that made it (not a foreign key: a salvaged store may have lost it).
    job_id       bigint NOT NULL,
    -- x_T: float32 little-endian, C·H·W values.
    xt           bytea  NOT NULL,
    source       bytea,
    preview      bytea
);
-- ListLatents' orders (newest/oldest walk the primary key) and filters.
CREATE INDEX latents_by_name  ON latents (lower_name, id);
CREATE INDEX latents_by_steps ON latents (encode_steps, id);
CREATE INDEX latents_by_created ON latents (created_ms, id);
CREATE INDEX latents_tags     ON latents USING gin (tags);
CREATE INDEX latents_parents  ON latents USING gin (parents);

CREATE TABLE jobs (
    id           bigint PRIMARY KEY CHECK (id >= 0),
    -- JobRecord (JSON, with `v`); state, priority and attempts below are its own,
    -- copied out for the claim query and kept equal to it.
    record       jsonb  NOT NULL,
    kind         text   NOT NULL,
    state        text   NOT NULL
                 CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    -- 0 interactive, 1 batch: a claim takes the lowest first, then the oldest.
    priority     smallint NOT NULL CHECK (priority IN (0, 1)),
    created_ms   bigint NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    -- The model a job must run on; NULL: any (jobs migrated from a one-model sled
    -- store that read no latent).
    fingerprint  text,
    -- ddim.v1.JobSpec and ddim.v1.JobResult (protobuf).
    spec         bytea,
    result       bytea,
    -- The daemon holding the job while it runs, until when; another daemon may
    -- take it back once the lease has run out.
    lease_owner  text,
    lease_until  timestamptz,
    -- The daemon that ran it (last attempt).
    ran_by       text,
    -- CancelJob on one daemon for a job another runs: the runner sees it when it
    -- renews its lease (and by NOTIFY sooner).
    cancel_requested boolean NOT NULL DEFAULT false,
    -- SubmitJob's idempotency key: one job per key.
    idempotency_key text UNIQUE
);
-- The claim: `WHERE state = 'queued' AND fingerprint … ORDER BY priority, id
-- FOR UPDATE SKIP LOCKED LIMIT n` walks this partial index.
CREATE INDEX jobs_queued  ON jobs (priority, id) WHERE state = 'queued';
-- The sweep of expired leases.
CREATE INDEX jobs_running ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_state   ON jobs (state, id);

-- Jobs that read or made a latent (ListJobs' latent filter, deleting a latent's
-- jobs); a link goes with its latent or its job.
CREATE TABLE job_latents (
    latent bigint NOT NULL REFERENCES latents (id) ON DELETE CASCADE,
    job    bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (latent, job)
);
CREATE INDEX job_latents_job ON job_latents (job);

-- The daemons sharing this store: each upserts its row at start and beats it.
CREATE TABLE daemons (
    id          text PRIMARY KEY,
    address     text NOT NULL,
    device      text NOT NULL,
    fingerprint text NOT NULL,
    running_job bigint,
    started     timestamptz NOT NULL DEFAULT now(),
    heartbeat   timestamptz NOT NULL DEFAULT now()
);
