package tracker

import "time"

// Room is what grants of one service's plain sequence may take: at most Max
// live grants at once, each ending FirstConnect after it is made unless its
// source opens a connection by then.
type Room struct {
	Max          int
	FirstConnect time.Duration
}

// SetRooms sets the plain-sequence room of each service, by service id: a
// grant of a plain sequence (MethodSequence) for a service in rooms takes
// room there. Services not in rooms bound their sequence grants only by the
// table. A room made smaller than it holds refuses new grants until enough
// lapse.
func (t *Tracker) SetRooms(rooms map[uint64]Room) { t.rooms.Store(&rooms) }

// takePlain takes one place of service id's plain room, if it has one left.
func (t *Tracker) takePlain(id uint64, max int) bool {
	t.roomMu.Lock()
	defer t.roomMu.Unlock()
	if t.plain[id] >= max {
		return false
	}
	t.plain[id]++
	return true
}

// freePlain gives back one place of service id's plain room.
func (t *Tracker) freePlain(id uint64) {
	t.roomMu.Lock()
	if t.plain[id]--; t.plain[id] <= 0 {
		delete(t.plain, id)
	}
	t.roomMu.Unlock()
}

func (t *Tracker) plainCount(id uint64) int {
	t.roomMu.Lock()
	defer t.roomMu.Unlock()
	return t.plain[id]
}
