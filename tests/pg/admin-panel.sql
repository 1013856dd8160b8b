-- The admin panel's schema in PostgreSQL, as its Laravel migrations create
-- it with DB_CONNECTION=pgsql (the same migrations as
-- /work/shared/schema/admin-panel.sql for SQLite): $table->id() is a
-- bigserial, foreignId() a bigint, string() a varchar(255), boolean() a
-- boolean (SQLite: tinyint(1)), timestamps() timestamp(0) without time zone.

create table "domains" (
  "id" bigserial not null primary key,
  "domain" varchar(255) not null,
  "active" boolean not null default '1',
  "description" text null,
  "dkim_selector" varchar(255) null,
  "dkim_private_key" text null,
  "dkim_public_key" text null,
  "created_at" timestamp(0) without time zone null,
  "updated_at" timestamp(0) without time zone null
);
alter table "domains" add constraint "domains_domain_unique" unique ("domain");

create table "email_accounts" (
  "id" bigserial not null primary key,
  "domain_id" bigint not null,
  "email" varchar(255) not null,
  "username" varchar(255) not null,
  "password" varchar(255) not null,
  "quota" integer not null default '1024',
  "active" boolean not null default '1',
  "created_at" timestamp(0) without time zone null,
  "updated_at" timestamp(0) without time zone null
);
alter table "email_accounts" add constraint "email_accounts_domain_id_foreign"
  foreign key ("domain_id") references "domains" ("id") on delete cascade;
alter table "email_accounts" add constraint "email_accounts_email_unique" unique ("email");

create table "aliases" (
  "id" bigserial not null primary key,
  "domain_id" bigint not null,
  "source" varchar(255) not null,
  "destination" varchar(255) not null,
  "active" boolean not null default '1',
  "created_at" timestamp(0) without time zone null,
  "updated_at" timestamp(0) without time zone null
);
alter table "aliases" add constraint "aliases_domain_id_foreign"
  foreign key ("domain_id") references "domains" ("id") on delete cascade;
create index "aliases_source_index" on "aliases" ("source");
