<?php
// mapsyncd's control API for PHP (php-curl): "is the change live?".
//
//     $account->save();
//     (new \Mapsyncd\Client('/run/mapsyncd/api.sock'))->sync();
//
// sync() returns once a cycle whose snapshot was taken after the call has
// written the maps and run their hooks (postmap...), or throws
// \Mapsyncd\SyncFailed (a map or hook failed: HTTP 500; the database is
// unavailable: 503) or \Mapsyncd\Unavailable (no daemon, no permission on
// the socket, a timeout). See mapsyncd(8), CONTROL API.

declare(strict_types=1);

namespace Mapsyncd;

class Exception extends \RuntimeException
{
}

/** mapsyncd could not be asked: no socket, no permission, a timeout. */
class Unavailable extends Exception
{
}

/** mapsyncd answered that the change is not (all) live. */
class SyncFailed extends Exception
{
    /** @var array<string,mixed> the answer's JSON body */
    public array $answer;
    public int $httpStatus;

    /** @param array<string,mixed> $answer */
    public function __construct(int $httpStatus, array $answer)
    {
        $this->httpStatus = $httpStatus;
        $this->answer = $answer;
        $what = $answer['error'] ?? self::describe($answer);
        parent::__construct("mapsyncd: HTTP $httpStatus: $what", $httpStatus);
    }

    /** @param array<string,mixed> $answer */
    private static function describe(array $answer): string
    {
        $failed = [];
        foreach ($answer['maps'] ?? [] as $m) {
            if (($m['status'] ?? '') === 'failed') {
                $failed[] = 'map ' . $m['name'];
            }
        }
        foreach ($answer['hooks'] ?? [] as $h) {
            if (($h['status'] ?? '') !== 'succeeded') {
                $failed[] = 'hook ' . $h['name'] . ' ' . $h['status'];
            }
        }
        return $failed ? implode(', ', $failed) . ' failed' : 'sync failed';
    }
}

class Client
{
    private string $socket;
    private int $timeoutS;

    /**
     * @param string $socket   the [api] listen socket
     * @param int    $timeoutS how long a sync may take before Unavailable
     *                         (its hooks included)
     */
    public function __construct(string $socket = '/run/mapsyncd/api.sock', int $timeoutS = 60)
    {
        $this->socket = $socket;
        $this->timeoutS = $timeoutS;
    }

    /**
     * Syncs now and waits until the maps and their hooks are done.
     *
     * @return array<string,mixed> {"generation", "ok", "maps", "hooks", "hooks_owed", "duration_ms"}
     */
    public function sync(): array
    {
        [$status, $answer] = $this->request('POST', '/v1/sync');
        if ($status !== 200) {
            throw new SyncFailed($status, $answer);
        }
        return $answer;
    }

    /**
     * Asks for a sync without waiting: the generation that will hold the
     * change (for status($generation - 1, ...)).
     */
    public function syncLater(): int
    {
        [$status, $answer] = $this->request('POST', '/v1/sync?wait=0');
        if ($status !== 202) {
            throw new SyncFailed($status, $answer);
        }
        return (int) $answer['generation'];
    }

    /**
     * The daemon's state; with $after, waits (at most $timeoutS seconds,
     * 300 at most) until the generation passes $after.
     *
     * @return array<string,mixed> {"generation", "state", "hooks_owed", "maps"}
     */
    public function status(?int $after = null, int $timeoutS = 30): array
    {
        $path = '/v1/status';
        if ($after !== null) {
            $path .= '?' . http_build_query(['after' => $after, 'timeout_s' => $timeoutS]);
        }
        [$status, $answer] = $this->request('GET', $path, $after !== null ? $timeoutS + 10 : null);
        if ($status !== 200) {
            throw new SyncFailed($status, $answer);
        }
        return $answer;
    }

    /** @return array{0:int,1:array<string,mixed>} */
    private function request(string $method, string $path, ?int $timeoutS = null): array
    {
        $ch = curl_init('http://localhost' . $path);
        curl_setopt_array($ch, [
            CURLOPT_UNIX_SOCKET_PATH => $this->socket,
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_TIMEOUT => $timeoutS ?? $this->timeoutS,
            CURLOPT_CONNECTTIMEOUT => 5,
            CURLOPT_HTTPHEADER => ['Accept: application/json', 'Expect:'],
            CURLOPT_PROXY => '',
        ]);
        $body = curl_exec($ch);
        if ($body === false) {
            $err = curl_error($ch);
            curl_close($ch);
            throw new Unavailable("mapsyncd at {$this->socket}: $err");
        }
        $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        curl_close($ch);
        $answer = json_decode((string) $body, true);
        if (!is_array($answer)) {
            throw new Unavailable("mapsyncd at {$this->socket}: HTTP $status with a body that is not JSON");
        }
        return [$status, $answer];
    }
}
