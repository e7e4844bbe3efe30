"""Infrastructure: settings, database, broker queue, migrations."""
