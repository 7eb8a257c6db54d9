-- A job store made by the release before the Alembic migrations (prunepilot at e8cbfb2,
-- tables from Base.metadata.create_all, no pp_alembic_version): sqlite3's iterdump of a file
-- written through that release's Database (two uploads, a SUCCEEDED job with events, an
-- artifact and an idempotency key, a QUEUED job), all owned by 'alice'.
BEGIN TRANSACTION;
CREATE TABLE pp_artifacts (
	job_id VARCHAR(32) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	size INTEGER NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	media_type VARCHAR(100) NOT NULL, 
	PRIMARY KEY (job_id, name)
);
INSERT INTO "pp_artifacts" VALUES('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','report.json',10,'cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd','application/json');
CREATE TABLE pp_events (
	id INTEGER NOT NULL, 
	job_id VARCHAR(32) NOT NULL, 
	at DATETIME NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	level VARCHAR(16), 
	message TEXT NOT NULL, 
	data TEXT, 
	PRIMARY KEY (id)
);
INSERT INTO "pp_events" VALUES(1,'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','2026-12-06 14:53:10.492451','status',NULL,'QUEUED',NULL);
INSERT INTO "pp_events" VALUES(2,'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','2026-12-06 14:53:10.499296','status',NULL,'RUNNING',NULL);
INSERT INTO "pp_events" VALUES(3,'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','2026-12-06 14:53:10.503085','progress',NULL,'trial 4 done','{"message": "trial 4 done"}');
INSERT INTO "pp_events" VALUES(4,'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','2026-12-06 14:53:10.507659','status',NULL,'SUCCEEDED',NULL);
INSERT INTO "pp_events" VALUES(5,'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb','2026-12-06 14:53:10.510813','status',NULL,'QUEUED',NULL);
CREATE TABLE pp_idempotency_keys (
	owner VARCHAR(200) NOT NULL, 
	"key" VARCHAR(200) NOT NULL, 
	job_id VARCHAR(32) NOT NULL, 
	fingerprint VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (owner, "key")
);
INSERT INTO "pp_idempotency_keys" VALUES('alice','key-1','aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff','2026-12-06 14:53:10.492451');
CREATE TABLE pp_jobs (
	seq INTEGER NOT NULL, 
	id VARCHAR(32) NOT NULL, 
	owner VARCHAR(200) NOT NULL, 
	name VARCHAR(200), 
	status VARCHAR(16) NOT NULL, 
	phase VARCHAR(64), 
	trials_done INTEGER NOT NULL, 
	trials_planned INTEGER NOT NULL, 
	best_score FLOAT, 
	created_at DATETIME NOT NULL, 
	started_at DATETIME, 
	finished_at DATETIME, 
	cancel_requested_at DATETIME, 
	error TEXT, 
	spec TEXT NOT NULL, 
	result TEXT, 
	attempt INTEGER NOT NULL, 
	PRIMARY KEY (seq)
);
INSERT INTO "pp_jobs" VALUES(1,'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','alice','old-done','SUCCEEDED','succeeded',4,4,0.875,'2026-12-06 14:53:10.492451','2026-12-06 14:53:10.499296','2026-12-06 14:53:10.507659',NULL,NULL,'{"name":"old-done","model":{"source":"prunepilot.service.zoo:digits_cnn","weights":null,"kwargs":{"width":8},"input_shape":[1,8,8]},"dataset":{"source":"builtin:digits","image_size":null,"channels":null,"mean":null,"std":null,"val_fraction":0.2,"score_fraction":0.1,"batch_size":32,"limit":400,"seed":0},"constraints":{"flops":"60%","params":null,"latency_ms":null,"target":{"device":"cpu","batch_size":1,"dtype":"fp32","threads":null,"memory_format":"contiguous","warmup":5,"repeats":20}},"space":{"min_ratio":0.25,"max_ratio":1.0,"step":0.125,"round_to":1,"ignore":[],"tie":false},"search":{"sampler":"tpe","trials":4,"uniform_seeds":2,"seed":0,"criterion":"l2","calib_batches":8,"bn_batches":2,"score_batches":2,"score_steps":0,"top_k":1,"rungs":2,"eta":3,"latency_model":true,"latency_margin":0.1,"fill_budget":true,"latency_slack":0.03,"latency_fit_samples":10,"latency_anchor":true,"baselines":["uniform","global","lamp"]},"finetune":{"steps":5,"lr":0.01,"momentum":0.9,"weight_decay":0.0005,"distill":false,"device":null},"workers":null}','{"note": "from the previous release"}',1);
INSERT INTO "pp_jobs" VALUES(2,'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb','alice','old-queued','QUEUED','queued',0,4,NULL,'2026-12-06 14:53:10.510813',NULL,NULL,NULL,NULL,'{"name":"old-queued","model":{"source":"prunepilot.service.zoo:digits_cnn","weights":null,"kwargs":{"width":8},"input_shape":[1,8,8]},"dataset":{"source":"builtin:digits","image_size":null,"channels":null,"mean":null,"std":null,"val_fraction":0.2,"score_fraction":0.1,"batch_size":32,"limit":400,"seed":0},"constraints":{"flops":"60%","params":null,"latency_ms":null,"target":{"device":"cpu","batch_size":1,"dtype":"fp32","threads":null,"memory_format":"contiguous","warmup":5,"repeats":20}},"space":{"min_ratio":0.25,"max_ratio":1.0,"step":0.125,"round_to":1,"ignore":[],"tie":false},"search":{"sampler":"tpe","trials":4,"uniform_seeds":2,"seed":0,"criterion":"l2","calib_batches":8,"bn_batches":2,"score_batches":2,"score_steps":0,"top_k":1,"rungs":2,"eta":3,"latency_model":true,"latency_margin":0.1,"fill_budget":true,"latency_slack":0.03,"latency_fit_samples":10,"latency_anchor":true,"baselines":["uniform","global","lamp"]},"finetune":{"steps":5,"lr":0.01,"momentum":0.9,"weight_decay":0.0005,"distill":false,"device":null},"workers":null}',NULL,0);
CREATE TABLE pp_uploads (
	id VARCHAR(64) NOT NULL, 
	owner VARCHAR(200) NOT NULL, 
	filename VARCHAR(300) NOT NULL, 
	size INTEGER NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	path VARCHAR(1000) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "pp_uploads" VALUES('uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu','alice','weights.safetensors',1234,'abababababababababababababababababababababababababababababababab','safetensors','uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu','2025-01-02 03:04:05.000000');
INSERT INTO "pp_uploads" VALUES('vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv','alice','imgs.zip',1234,'abababababababababababababababababababababababababababababababab','archive','vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv','2025-01-02 03:04:05.000000');
CREATE INDEX ix_pp_jobs_owner ON pp_jobs (owner);
CREATE INDEX ix_pp_jobs_status ON pp_jobs (status);
CREATE UNIQUE INDEX ix_pp_jobs_id ON pp_jobs (id);
CREATE INDEX ix_pp_uploads_owner ON pp_uploads (owner);
CREATE INDEX ix_pp_events_job_id ON pp_events (job_id);
CREATE INDEX ix_pp_idempotency_keys_job_id ON pp_idempotency_keys (job_id);
COMMIT;
