-- Every room event, exactly once: the counter is the JetStream stream sequence.
CREATE TABLE IF NOT EXISTS events (
    counter BIGINT PRIMARY KEY,
    room TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS events_room_counter ON events (room, counter);
