-- room/enter asks for a room's last messages before a counter. With only (room, counter), a room
-- of 20,000 enters and few messages was walked back through every enter on every enter; this
-- index holds the messages alone, so the answer is a short read whatever else the room holds.
CREATE INDEX IF NOT EXISTS events_room_messages ON events (room, counter) WHERE kind = 'message';
