/// The embedded default configuration: the closed-loop healthcare scenario. Its comments are the reference for
/// every key of the config file (`brokerd --print-default-config` prints it).
enum DefaultConfig {
    static let text = #"""
        # brokerd configuration — the closed-loop healthcare scenario (the embedded default).
        #
        # Print this file with `brokerd --print-default-config`, edit it, and start brokerd with `--config FILE`.
        # Every key brokerd understands appears below. Unknown keys, wrong value types and references to
        # undeclared classes or roles are errors that stop brokerd, so a typo can never silently weaken the policy.
        # Names (classes, topics, roles) use A-Z a-z 0-9 . _ - only.

        # Sensitivity classes, from least to most sensitive (required, non-empty, no duplicates). A role cleared
        # up to a class may read topics of that class and of every class listed before it.
        #   non_phi       operational metadata with no health information (e.g. "module completed")
        #   deidentified  health data with identifiers removed, fit for analytics
        #   pseudonymous  health-related data keyed by a pseudonym, re-identifiable by its owner
        #   phi           protected health information
        classes = ["non_phi", "deidentified", "pseudonymous", "phi"]

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

        # Topics. One [[topics]] entry per topic; names are unique, at most 249 characters, and may not start
        # with "__" (reserved for the broker). Keys:
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
        # All sizes and durations are positive integers.

        # A learning portal reports completed education modules: account-level, no patient data.
        [[topics]]
        name = "education.completed"
        class = "non_phi"
        fsync = "always"
        compression = "lz4"
        segment_bytes = 67108864

        # Patient-support milestones (enrolled, onboarded, refill delayed), keyed by a pseudonymous patient id.
        [[topics]]
        name = "support.milestone"
        class = "pseudonymous"
        fsync = "always"
        compression = "lz4"
        segment_bytes = 67108864
        # Keep about 90 days of milestones.
        retention_ms = 7776000000

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

        # Referrals created in the EHR: protected health information, readable only by roles cleared for phi.
        [[topics]]
        name = "clinical.referral"
        class = "phi"
        fsync = "always"
        compression = "lz4"
        segment_bytes = 67108864

        # Roles. One [[roles]] entry per role; names are unique. Keys:
        #   name       required  the role name
        #   clearance  required  one of `classes`: the most sensitive class this role may read
        #   publish    optional  topic patterns this role may publish to (default [] = none)
        #   subscribe  optional  topic patterns this role may read (default [] = none)
        # In a pattern `*` matches any run of characters, dots included ("education.*", "*.referral", "*");
        # everything else matches itself. Reading needs BOTH a matching subscribe pattern AND a clearance at or
        # above the topic's class, otherwise the broker answers NOT_CLEARED. Publishing needs only a matching
        # publish pattern (NOT_AUTHORIZED otherwise): a source system may write data more sensitive than it may
        # read back.

        # The learning portal: publishes education events, reads nothing.
        [[roles]]
        name = "learning_portal"
        clearance = "non_phi"
        publish = ["education.*"]
        subscribe = []

        # The patient-support portal and call center: publishes milestones and EHR-originated referrals.
        [[roles]]
        name = "support_portal"
        clearance = "non_phi"
        publish = ["support.*", "clinical.*"]
        subscribe = []

        # CRM automation: account-level notes only, so cleared for non_phi.
        [[roles]]
        name = "crm"
        clearance = "non_phi"
        publish = []
        subscribe = ["education.*"]

        # BI/analytics warehouse: de-identified or non-PHI feeds only.
        [[roles]]
        name = "analytics"
        clearance = "deidentified"
        publish = []
        subscribe = ["analytics.*", "education.*"]

        # Patient-support tools: the minimum data to coordinate care, PHI included.
        [[roles]]
        name = "patient_support"
        clearance = "phi"
        publish = []
        subscribe = ["support.*", "clinical.*"]

        # Operators: every topic, both ways (also the only producer of analytics.deidentified in this scenario;
        # a real de-identification service would get a role of its own with publish = ["analytics.*"]).
        [[roles]]
        name = "operator"
        clearance = "phi"
        publish = ["*"]
        subscribe = ["*"]

        # Principals: the identities clients authenticate as (HELLO carries client_id and token). One
        # [[principals]] entry per client; client ids are unique and use A-Z a-z 0-9 . _ - @. Keys:
        #   client_id   required  the id the client presents
        #   role        required  one of the roles above
        #   token_hash  "sha256:" + 64 lowercase hex digits: the SHA-256 of the client's token, e.g. from
        #               `printf %s "$TOKEN" | sha256sum`. The broker stores only this hash.
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

        """#
}
