"""The archive: tables, engines, migrations, the store and its queries."""
