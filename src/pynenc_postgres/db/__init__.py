"""Database layer shared by every pynenc-postgres component.

It knows tables, connections, migrations and errors; it knows nothing of pynenc's
runtime objects. Components translate their DTOs into rows and call into here.
"""
