/// The embedded default configuration: the closed-loop healthcare scenario. Its comments are the reference for
/// every key of the config file (`brokerd --print-default-config` prints it).
enum DefaultConfig {
    static let text = #"""
        # brokerd configuration — the closed-loop healthcare scenario (the embedded default).
        #
        # Print this file with `brokerd --print-default-config`, edit it, and start brokerd with `--config FILE`.
        # Every key brokerd understands appears below. Unknown keys, wrong value types and references to
        # undeclared classes, roles, purposes or consent scopes are errors that stop brokerd, so a typo can never
        # silently weaken the policy. Names (classes, purposes, consent scopes, topics, roles) use A-Z a-z 0-9 . _ -
        # only. Every decision the broker takes names the rule that fired and the policy version: "pv-" and 12 hex
        # digits of a hash of everything below except [server], the same for the same rules however they are
        # written and different as soon as any rule changes.

        # Sensitivity classes, from least to most sensitive (required, non-empty, no duplicates). A role cleared
        # up to a class may read topics of that class and of every class listed before it.
        #   non_phi       operational metadata with no health information (e.g. "module completed")
        #   deidentified  health data with identifiers removed, fit for analytics
        #   pseudonymous  health-related data keyed by a pseudonym, re-identifiable by its owner
        #   phi           protected health information
        classes = ["non_phi", "deidentified", "pseudonymous", "phi"]

        # Purposes: why data moves (optional; the list shown is the default). Every topic states the purposes its
        # records serve and every reading role the purposes it reads for; a role may subscribe only to a topic
        # with which it shares at least one purpose, whatever its patterns and clearance say.
        #   care_coordination     treating and coordinating care for a patient
        #   patient_support       enrollment, onboarding, adherence and access programs
        #   commercial_analytics  measuring and planning commercial activity
        #   safety                pharmacovigilance and product safety
        #   operations            running the systems themselves
        purposes = ["care_coordination", "patient_support", "commercial_analytics", "safety", "operations"]

        # Consent scopes: what a person or HCP agreed to (optional; the list shown is the default). A record names
        # its scopes in its `consent_scope` header ("educational" or "treatment_support, operational_notice"); a
        # topic lists the scopes its records may carry (others are quarantined); a role lists the scopes it may
        # receive, and a record none of whose scopes the subscriber's role may receive is withheld from it at
        # delivery time. Support and promotion are separate scopes, never one "opted in" flag.
        consent_scopes = [
            "treatment_support", "operational_notice", "educational", "promotional_outreach",
            "hcp_commercial_engagement",
        ]

        # Server settings. Every key is optional; the values shown are the defaults.
        [server]
        # Address to listen on, HOST:PORT; IPv6 hosts in brackets ("[::1]:7420"); port 0…65535, 0 picks a free one.
        # Overridden by `brokerd --listen`.
        listen = "127.0.0.1:7420"
        # Directory for topic logs, committed consumer offsets and generated credentials (credentials.toml).
        # Overridden by `brokerd --data-dir`.
        data_dir = "./brokerd-data"
        # Largest frame the broker accepts or sends, in bytes (1024…4294967295). A PUBLISH larger than this is
        # refused; it also bounds how much one connection can make the broker buffer.
        max_frame_bytes = 16777216
        # Most records one PUBLISH may carry (1…4294967295).
        max_records_per_publish = 10000
        # Connections beyond this many are refused (at least 1).
        max_connections = 10000
        # Seconds a new connection has to send a valid HELLO before it is closed (1…86400).
        handshake_timeout_seconds = 10
        # Seconds a frame may stay incomplete (a header or body partly sent, then nothing) before the connection
        # is closed with MALFORMED_FRAME (1…86400); restarts whenever a frame completes.
        frame_timeout_seconds = 30

        # TLS (docs/SECURITY.md section 3). Without a [server.tls] table brokerd speaks plaintext TCP, and then
        # listens only on a loopback address (127.0.0.0/8, ::1, localhost) unless started with --allow-plaintext.
        # With it, every connection is TLS 1.2 or 1.3. Keys:
        #   cert_file       required  PEM file: the server certificate, then any intermediates
        #   key_file        required  PEM file: its private key (unencrypted)
        #   client_auth     optional  "none" (default): clients authenticate with tokens in HELLO; "optional": a
        #                             client may present a certificate, which then authenticates it (principals'
        #                             cert_identity) and its HELLO token is not checked; "required": every client
        #                             must present one, and no token is ever checked
        #   client_ca_file  with client_auth "optional" or "required" (and only then): PEM file of the CA
        #                             certificates that sign client certificates
        # Relative paths are resolved against brokerd's working directory; a missing file is a config error.
        # The certificate and key are read at start (a reload does not re-read them).
        # [server.tls]
        # cert_file = "/etc/brokerd/server.pem"
        # key_file = "/etc/brokerd/server.key"
        # client_ca_file = "/etc/brokerd/clients-ca.pem"
        # client_auth = "required"

        # Prometheus metrics (docs/METRICS.md): brokerd serves the text exposition at http://<listen>/metrics.
        # Every key is optional; the values shown are the defaults. Not part of the policy version.
        [metrics]
        # Serve the endpoint (true) or not (false). Overridden by `brokerd --no-metrics`.
        enabled = true
        # Address of the endpoint, HOST:PORT like [server] listen (0 picks a free port); it must differ from
        # [server] listen. It answers anyone who can connect: keep it on loopback or a monitoring network.
        # Overridden by `brokerd --metrics-listen`.
        listen = "127.0.0.1:9420"

        # Topics. One [[topics]] entry per topic; names are unique, at most 200 characters, and may not start
        # with "__": `__quarantine` (records that failed policy) and `__audit` (the audit ledger) always exist,
        # belong to the most sensitive class, are written only by the broker, and are read only by roles with
        # the `quarantine.read` / `audit.read` capability (and clearance for that class). Keys:
        #   name                required  the topic name
        #   class               required  one of `classes`; decides which roles may read the topic
        #   fsync               optional  "always" (default): records are on disk before they are acknowledged;
        #                                 "interval:<ms>": synced at most every <ms> milliseconds, so a crash can
        #                                 lose acknowledged records; "never": left to the operating system
        #   compression         optional  "lz4" (default) or "none": how record batches are stored
        #   segment_bytes       optional  roll to a new log segment at this size (default 67108864 = 64 MiB)
        #   segment_max_age_ms  optional  also roll the active segment once its first batch is this old
        #                                 (default: no age limit)
        #   retention_bytes     optional  delete the oldest closed segments while the topic is larger than this
        #                                 (default: keep everything)
        #   retention_ms        optional  delete closed segments whose newest record is older than this
        #                                 (default: keep everything)
        #   page_cache_bytes    optional  bytes of the newest log writes left in the kernel's page cache; older
        #                                 ones are dropped from it as the log grows, and a consumer further behind
        #                                 reads them from the disk (default 536870912 = 512 MiB; at least 16 MiB;
        #                                 0 = the kernel keeps what it likes)
        #   purposes            optional  non-empty list of declared `purposes` its records serve (default: every
        #                                 default purpose; state it, it is what subscribers are checked against)
        #   consent_scopes      optional  declared `consent_scopes` its records may carry; a record whose
        #                                 `consent_scope` header names any other scope is quarantined
        #                                 (default: every default scope)
        #   required_headers    optional  headers every record must carry with a non-empty value, else it is
        #                                 quarantined (default ["event_type", "source_system", "consent_scope"]);
        #                                 if it includes consent_scope, consent_scopes may not be empty
        #   payload             optional  "json" (default): the value must be one JSON object (UTF-8, nesting at
        #                                 most 64 deep) and the field rules below apply; "any": opaque bytes, no
        #                                 field rules
        #   allowed_fields      optional  the only top-level JSON fields a value may have, matched exactly
        #                                 (default: any field)
        #   forbidden_fields    optional  JSON field names a value may not contain at any depth (nested objects
        #                                 and objects in arrays included), matched ignoring ASCII case. Default:
        #                                 ["patient_name", "dob", "mrn", "ssn", "diagnosis", "note"] on every
        #                                 class except the most sensitive one (the last of `classes`, here phi),
        #                                 which may carry identifiers and defaults to []. Set [] to lift it.
        #   dedupe_window_ms    optional  how long a producer's `dedupe-key` is remembered: a second record with
        #                                 the same key within the window is not appended and its PUBLISH_ACK
        #                                 reports the original offset (default 86400000 = 24 h)
        #   dedupe_max_keys     optional  the most dedupe keys remembered for the topic at once, 1…100000000
        #                                 (default 1000000)
        # All sizes and durations are positive integers. A record that fails a rule is not appended to its topic:
        # it goes to `__quarantine` with the reason and the rule that fired. Whatever the topic, a record may not
        # carry headers starting with broker-, quarantine-, replayed- or replay- (the broker sets those), nor more
        # than one `dedupe-key` (1…256 bytes).

        # A learning portal reports completed education modules: account-level, no patient data, and only the
        # fields the scenario's minimal event trigger needs.
        [[topics]]
        name = "education.completed"
        class = "non_phi"
        fsync = "always"
        compression = "lz4"
        segment_bytes = 67108864
        purposes = ["commercial_analytics", "operations"]
        consent_scopes = ["hcp_commercial_engagement", "educational", "operational_notice"]
        required_headers = ["event_type", "source_system", "consent_scope"]
        payload = "json"
        allowed_fields = [
            "event_type", "source_system", "account_id", "timestamp", "sensitivity", "consent_scope",
            "allowed_recipients", "payload",
        ]
        forbidden_fields = ["patient_name", "dob", "mrn", "ssn", "diagnosis", "note"]
        dedupe_window_ms = 86400000
        dedupe_max_keys = 1000000

        # Patient-support milestones (enrolled, onboarded, refill delayed), keyed by a pseudonymous patient id.
        # The default forbidden fields apply (pseudonymous is not the most sensitive class).
        [[topics]]
        name = "support.milestone"
        class = "pseudonymous"
        fsync = "always"
        compression = "lz4"
        segment_bytes = 67108864
        # Keep about 90 days of milestones.
        retention_ms = 7776000000
        purposes = ["patient_support", "care_coordination"]
        consent_scopes = ["treatment_support", "operational_notice"]
        # Call centers retry; a week of dedupe covers their retry horizon.
        dedupe_window_ms = 604800000

        # Operational notices to enrolled patients (refill reminder sent, appointment confirmed): no health
        # information, hence non_phi, but they exist for patient support only, so a commercial role does not read
        # them even though its clearance would allow it.
        [[topics]]
        name = "support.notice"
        class = "non_phi"
        purposes = ["patient_support"]
        consent_scopes = ["operational_notice", "treatment_support"]

        # Promotional and program outreach to enrolled patients (a co-pay program offer, a program newsletter),
        # keyed by the pseudonymous patient token in the `recipient` header. Promotion is its own consent scope,
        # never implied by support consent; the per-recipient contact caps below apply here.
        [[topics]]
        name = "support.outreach"
        class = "pseudonymous"
        purposes = ["patient_support"]
        consent_scopes = ["promotional_outreach", "operational_notice"]

        # De-identified, aggregated events for closed-loop measurement. Rebuildable from the sources, so it
        # trades a little durability for throughput and keeps at most 10 GiB.
        [[topics]]
        name = "analytics.deidentified"
        class = "deidentified"
        fsync = "interval:50"
        compression = "lz4"
        segment_bytes = 67108864
        segment_max_age_ms = 86400000
        retention_bytes = 10737418240
        purposes = ["commercial_analytics", "safety"]
        consent_scopes = ["educational", "hcp_commercial_engagement", "operational_notice"]
        # Aggregates are recomputed hourly; an hour of dedupe is enough and keeps the key set small.
        dedupe_window_ms = 3600000
        dedupe_max_keys = 100000

        # Referrals created in the EHR: protected health information, readable only by roles cleared for phi.
        # As the most sensitive class it may carry identifiers (forbidden_fields defaults to []).
        [[topics]]
        name = "clinical.referral"
        class = "phi"
        fsync = "always"
        compression = "lz4"
        segment_bytes = 67108864
        purposes = ["care_coordination"]
        consent_scopes = ["treatment_support"]

        # Roles. One [[roles]] entry per role; names are unique. Keys:
        #   name            required  the role name
        #   clearance       required  one of `classes`: the most sensitive class this role may read
        #   publish         optional  topic patterns this role may publish to (default [] = none)
        #   subscribe       optional  topic patterns this role may read (default [] = none)
        #   purposes        optional  declared `purposes` it reads for (default: every default purpose)
        #   consent_scopes  optional  declared `consent_scopes` it may receive (default: every default scope)
        #   capabilities    optional  any of "quarantine.read" (read `__quarantine`), "quarantine.replay" (replay
        #                             quarantined records), "audit.read" (read `__audit`), "admin" (reload the
        #                             config) (default [] = none)
        # In a pattern `*` matches any run of characters, dots included ("education.*", "*.referral", "*");
        # everything else matches itself. Reading needs, checked in this order: a matching subscribe pattern, a
        # clearance at or above the topic's class, and a purpose shared with the topic; the broker answers
        # NOT_CLEARED naming the first that fails. Each record is then delivered only if at least one of its
        # consent scopes is one the role may receive; other records are withheld (skipped, counted, audited).
        # Publishing needs only a matching publish pattern (NOT_AUTHORIZED otherwise): a source system may write
        # data more sensitive than it may read back. Roles that only publish set purposes = [] and
        # consent_scopes = [] (leaving the keys out would give them the default lists).

        # The learning portal: publishes education events, reads nothing.
        [[roles]]
        name = "learning_portal"
        clearance = "non_phi"
        publish = ["education.*"]
        subscribe = []
        purposes = []
        consent_scopes = []

        # The patient-support portal and call center: publishes milestones, notices and EHR-originated referrals.
        [[roles]]
        name = "support_portal"
        clearance = "non_phi"
        publish = ["support.*", "clinical.*"]
        subscribe = []
        purposes = []
        consent_scopes = []

        # CRM automation: account-level notes only, so cleared for non_phi, for commercial purposes, and only
        # records an HCP agreed to for commercial engagement or education.
        [[roles]]
        name = "crm"
        clearance = "non_phi"
        publish = []
        subscribe = ["education.*"]
        purposes = ["commercial_analytics"]
        consent_scopes = ["hcp_commercial_engagement", "educational"]

        # BI/analytics warehouse: de-identified or non-PHI feeds only. Its support.* pattern is broad on purpose
        # in this example: clearance keeps it off support.milestone and purpose keeps it off support.notice.
        [[roles]]
        name = "analytics"
        clearance = "deidentified"
        publish = []
        subscribe = ["analytics.*", "education.*", "support.*"]
        purposes = ["commercial_analytics"]
        consent_scopes = ["educational", "hcp_commercial_engagement", "operational_notice"]

        # Patient-support tools: the minimum data to coordinate care, PHI included, for support and care only.
        # They read support.outreach, but only its operational notices: promotion is withheld from them.
        [[roles]]
        name = "patient_support"
        clearance = "phi"
        publish = []
        subscribe = ["support.*", "clinical.*"]
        purposes = ["patient_support", "care_coordination"]
        consent_scopes = ["treatment_support", "operational_notice"]

        # Operators: every topic, both ways (also the only producer of analytics.deidentified in this scenario;
        # a real de-identification service would get a role of its own with publish = ["analytics.*"]). They
        # review and replay quarantined records and reload the config, but do not read the audit ledger that
        # records what they did.
        [[roles]]
        name = "operator"
        clearance = "phi"
        publish = ["*"]
        subscribe = ["*"]
        purposes = ["care_coordination", "patient_support", "commercial_analytics", "safety", "operations"]
        consent_scopes = [
            "treatment_support", "operational_notice", "educational", "promotional_outreach",
            "hcp_commercial_engagement",
        ]
        capabilities = ["quarantine.read", "quarantine.replay", "admin"]

        # Auditors: the audit ledger only. `__audit` is of the most sensitive class, so the role is cleared for it;
        # with no topic patterns it reads nothing else.
        [[roles]]
        name = "auditor"
        clearance = "phi"
        publish = []
        subscribe = []
        purposes = []
        consent_scopes = []
        capabilities = ["audit.read"]

        # Principals: the identities clients authenticate as (HELLO carries client_id and token). One
        # [[principals]] entry per client; client ids are unique and use A-Z a-z 0-9 . _ - @. Keys:
        #   client_id   required  the id the client presents
        #   role        required  one of the roles above
        #   token_hash  "sha256:" + 64 lowercase hex digits: the SHA-256 of the client's token, e.g. from
        #               `printf %s "$TOKEN" | sha256sum`. The broker stores only this hash.
        #   cert_identity  with [server.tls] client_auth "optional" or "required": the client-certificate name that
        #               authenticates this principal instead of a token: "cn:NAME" (a subject common name),
        #               "dns:NAME", "email:ADDRESS" or "uri:URI" (subject alternative names of those types). Unique
        #               across principals; DNS names and e-mail addresses compare ignoring case. A principal with
        #               cert_identity and no token_hash connects only with its certificate (no token is generated).
        #               Under client_auth = "required" every principal needs one.
        # A principal without token_hash gets a generated token: on first start brokerd writes a random token for
        # each such principal to <data_dir>/credentials.toml (mode 0600) and reuses it afterwards. Only this
        # embedded default relies on that; a production config gives every principal a token_hash, so no secret
        # is ever written to disk.

        [[principals]]
        client_id = "learning-portal"
        role = "learning_portal"

        [[principals]]
        client_id = "support-portal"
        role = "support_portal"

        [[principals]]
        client_id = "crm-automation"
        role = "crm"

        [[principals]]
        client_id = "analytics-lake"
        role = "analytics"

        [[principals]]
        client_id = "support-desk"
        role = "patient_support"

        [[principals]]
        client_id = "ops-admin"
        role = "operator"

        # Compliance operations: reviews and replays quarantined records.
        [[principals]]
        client_id = "quarantine-operator"
        role = "operator"

        # The compliance office's auditor: reads the audit ledger and nothing else.
        [[principals]]
        client_id = "compliance-auditor"
        role = "auditor"

        """#

    /// The closed-loop scenario's limiters (per-recipient contact caps stricter by class, a promotional-outreach
    /// scope limit, a per-connection guard, an analytics delivery quota), in config syntax; the embedded default is
    /// `text` followed by these.
    static let limiters = #"""
        # Limiters: rate limits and contact caps. In this domain a limiter is a privacy control as much as a
        # protection of the broker: a retry storm or a dedupe bug must not become fifty reminder texts to one
        # patient. One [[limiters]] entry per limiter; names are unique and use a-z 0-9 _ . - only. Keys:
        #   name              required  the limiter name (shown in PUBLISH_ACK, __quarantine, metrics, audit)
        #   applies_to        required  "publish" (counted as producers publish) or "delivery" (counted as the
        #                               broker delivers to a subscriber)
        #   key               required  what a separate limit is kept for:
        #                                 "recipient"      the value of the record header named by key_header;
        #                                                  a record without that header (or with an empty one)
        #                                                  is not limited by this limiter, so a topic that must
        #                                                  always be capped should also require the header
        #                                 "consent_scope"  each scope in the record's consent_scope header (only
        #                                                  those in consent_scopes below, when given); a record
        #                                                  with several is limited if any of them is
        #                                 "class"          the topic's sensitivity class
        #                                 "producer"       the publishing client id (publish only)
        #                                 "connection"     the connection the record came on (publish only)
        #                                 "subscriber"     the subscribing client id (delivery only)
        #                                 "group"          the consumer group, else the client id (delivery only)
        #                                 "global"         one limit for every record the limiter applies to
        #   key_header        optional  with key = "recipient": the header naming the person or entity the
        #                               record would contact (default "recipient")
        #   a limit, one of:
        #     rate + burst    a token bucket: `rate` records per second on average (a number > 0), at most
        #                     `burst` (an integer >= 1) at once. Its clock is monotonic; its state lives in memory.
        #     cap + window_ms an exact sliding window: at most `cap` records (1…4096) in ANY window of `window_ms`
        #                     milliseconds (1…31622400000 = 366 days), e.g. 3 per 24 h. Its clock is the wall
        #                     clock, and its event times are persisted, so a restart never resets a contact cap.
        #   bytes_per_second  optional, delivery only: also limit delivered bytes per second per key
        #   burst_bytes       optional, delivery only, with bytes_per_second (default: one second's worth)
        #   topics            optional  topic patterns (as in roles) it applies to; each must match a declared
        #                               topic (default: every topic)
        #   consent_scopes    optional  declared scopes; it applies only to records carrying one of them
        #   classes           optional  declared classes; it applies only to topics of these classes
        #   action            optional  publish: "reject" (default; PUBLISH_ACK RATE_LIMITED with a retry-after in
        #                               milliseconds), "quarantine" (the record goes to __quarantine with reason
        #                               RATE_LIMITED and the limiter's name) or "delay" (held until allowed);
        #                               delivery: "delay" only (paced: records wait in the log, never dropped)
        #   max_keys          optional  the most keys held at once, 1…100000000 (default 100000). Keys whose
        #                               limit is back to fresh are forgotten first; when every key is still
        #                               limited, a new key is refused (the table fails closed, never forgetting
        #                               a cap that is in force)
        # All filters must match for a limiter to apply, and a limiter must apply to at least one declared topic.
        # A record is checked against every limiter that applies to it, and it passes only if all of them allow
        # it. Caps are stricter the more sensitive the data: PHI topics get tighter per-recipient caps than
        # pseudonymous ones.

        # At most 3 promotional outreach records per recipient in any 24 hours, whatever the topic or producer.
        [[limiters]]
        name = "outreach_per_recipient"
        applies_to = "publish"
        key = "recipient"
        key_header = "recipient"
        consent_scopes = ["promotional_outreach"]
        cap = 3
        window_ms = 86400000
        action = "reject"
        max_keys = 100000

        # PHI topics: at most 5 records about one recipient in any hour (tighter than non-PHI topics).
        [[limiters]]
        name = "phi_per_recipient"
        applies_to = "publish"
        key = "recipient"
        classes = ["phi"]
        cap = 5
        window_ms = 3600000
        action = "reject"

        # Pseudonymous topics: at most 20 records per recipient in any hour.
        [[limiters]]
        name = "support_per_recipient"
        applies_to = "publish"
        key = "recipient"
        classes = ["pseudonymous"]
        cap = 20
        window_ms = 3600000
        action = "reject"

        # All promotional outreach together, across every producer: 50 records per second, bursts of 100. The
        # excess is quarantined for review rather than bounced back to a retrying producer.
        [[limiters]]
        name = "promotional_scope"
        applies_to = "publish"
        key = "consent_scope"
        consent_scopes = ["promotional_outreach"]
        rate = 50
        burst = 100
        action = "quarantine"

        # Protects the broker: any one connection publishes at most 50,000 records per second (bursts of 100,000).
        [[limiters]]
        name = "per_connection"
        applies_to = "publish"
        key = "connection"
        rate = 50000
        burst = 100000
        action = "reject"

        # Destination quota: each analytics subscriber receives at most 20,000 records per second (bursts of
        # 40,000); faster consumers are paced, and records wait in the log.
        [[limiters]]
        name = "analytics_delivery"
        applies_to = "delivery"
        key = "subscriber"
        topics = ["analytics.*"]
        rate = 20000
        burst = 40000
        action = "delay"
        """#
}
