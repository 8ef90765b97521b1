"""Trade history: matchengine events -> the ``trade_history`` tables (SQLite or MySQL)."""
