-- mapsyncd-notify.sql: tells mapsyncd (driver = postgresql) that the admin
-- panel's maps may have changed. Run it once in the panel's database, as
-- the owner of its tables (for instance from a Laravel migration:
-- DB::unprepared(file_get_contents('.../mapsyncd-notify.sql'))). mapsyncd
-- itself never writes the database: it only LISTENs on the channel.
--
-- One NOTIFY per statement, not per row: a statement that changes 10,000
-- rows sends one notification, and PostgreSQL folds repeated
-- notifications of one transaction into one, delivered at COMMIT (never
-- for a transaction rolled back). The payload is the table's name; mapsyncd
-- re-reads every map whatever it says.
--
-- The channel is "mapsyncd"; with another [database] channel = NAME,
-- replace 'mapsyncd' below by that NAME.
--
-- On a logical-replication subscriber the apply worker runs with
-- session_replication_role = replica, where ordinary triggers do not fire,
-- and it fires row-level triggers only, never statement-level ones. So
-- each table gets two triggers: the statement-level one, ENABLE ALWAYS
-- (every session that writes the table itself, and the initial copy of a
-- subscription), and a row-level one, ENABLE REPLICA (only the apply
-- worker: a replicated transaction of 10,000 rows still sends one
-- notification per table, as PostgreSQL folds equal notifications of one
-- transaction). On a primary the row-level trigger never fires. Run this
-- file on every node whose mapsyncd LISTENs. DDL is not replicated: run the
-- panel's migrations, and this file, on each subscriber as well.

CREATE OR REPLACE FUNCTION mapsyncd_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('mapsyncd', TG_TABLE_NAME);
  RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS mapsyncd_notify ON domains;
CREATE TRIGGER mapsyncd_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON domains
  FOR EACH STATEMENT EXECUTE FUNCTION mapsyncd_notify();
ALTER TABLE domains ENABLE ALWAYS TRIGGER mapsyncd_notify;
DROP TRIGGER IF EXISTS mapsyncd_notify_replica ON domains;
CREATE TRIGGER mapsyncd_notify_replica AFTER INSERT OR UPDATE OR DELETE ON domains
  FOR EACH ROW EXECUTE FUNCTION mapsyncd_notify();
ALTER TABLE domains ENABLE REPLICA TRIGGER mapsyncd_notify_replica;

DROP TRIGGER IF EXISTS mapsyncd_notify ON email_accounts;
CREATE TRIGGER mapsyncd_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON email_accounts
  FOR EACH STATEMENT EXECUTE FUNCTION mapsyncd_notify();
ALTER TABLE email_accounts ENABLE ALWAYS TRIGGER mapsyncd_notify;
DROP TRIGGER IF EXISTS mapsyncd_notify_replica ON email_accounts;
CREATE TRIGGER mapsyncd_notify_replica AFTER INSERT OR UPDATE OR DELETE ON email_accounts
  FOR EACH ROW EXECUTE FUNCTION mapsyncd_notify();
ALTER TABLE email_accounts ENABLE REPLICA TRIGGER mapsyncd_notify_replica;

DROP TRIGGER IF EXISTS mapsyncd_notify ON aliases;
CREATE TRIGGER mapsyncd_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aliases
  FOR EACH STATEMENT EXECUTE FUNCTION mapsyncd_notify();
ALTER TABLE aliases ENABLE ALWAYS TRIGGER mapsyncd_notify;
DROP TRIGGER IF EXISTS mapsyncd_notify_replica ON aliases;
CREATE TRIGGER mapsyncd_notify_replica AFTER INSERT OR UPDATE OR DELETE ON aliases
  FOR EACH ROW EXECUTE FUNCTION mapsyncd_notify();
ALTER TABLE aliases ENABLE REPLICA TRIGGER mapsyncd_notify_replica;
