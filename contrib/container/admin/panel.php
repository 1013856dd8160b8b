<?php
// The admin panel's writes, as Laravel's Eloquent issues them: one PDO
// connection per request, one transaction, commit, close. Actions come in
// the query string; the answer is one JSON object.
//   action=add_account&email=..&password=<bcrypt>&quota=N
//   action=delete_account&email=..
//   action=add_alias&source=..&destination=..
//   action=delete_alias&source=..
header('Content-Type: application/json');
$db = '/var/lib/mailadmin/database.sqlite';
$q = $_GET;
function domain_id(PDO $pdo, string $email): int {
    $domain = substr($email, strrpos($email, '@') + 1);
    $st = $pdo->prepare('SELECT id FROM domains WHERE domain = ?');
    $st->execute([$domain]);
    $id = $st->fetchColumn();
    if ($id === false) {
        throw new RuntimeException("unknown domain $domain");
    }
    return (int)$id;
}
try {
    $pdo = new PDO("sqlite:$db", null, null, [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
    $pdo->exec('PRAGMA busy_timeout = 5000');
    $pdo->beginTransaction();
    $now = gmdate('Y-m-d H:i:s');
    switch ($q['action'] ?? '') {
    case 'add_account':
        $st = $pdo->prepare('INSERT INTO email_accounts (domain_id, email, username, password, quota,'
            . ' active, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?)');
        $st->execute([domain_id($pdo, $q['email']), $q['email'], strstr($q['email'], '@', true),
            $q['password'], (int)($q['quota'] ?? 0), $now, $now]);
        break;
    case 'delete_account':
        $pdo->prepare('DELETE FROM email_accounts WHERE email = ?')->execute([$q['email']]);
        break;
    case 'add_alias':
        $st = $pdo->prepare('INSERT INTO aliases (domain_id, source, destination, active, created_at,'
            . ' updated_at) VALUES (?, ?, ?, 1, ?, ?)');
        $st->execute([domain_id($pdo, $q['source']), $q['source'], $q['destination'], $now, $now]);
        break;
    case 'delete_alias':
        $pdo->prepare('DELETE FROM aliases WHERE source = ?')->execute([$q['source']]);
        break;
    default:
        throw new RuntimeException('unknown action');
    }
    $pdo->commit();
    $mode = $pdo->query('PRAGMA journal_mode')->fetchColumn();
    $pdo = null; // close: the end of the request
    echo json_encode(['ok' => true, 'journal_mode' => $mode]), "\n";
} catch (Throwable $e) {
    http_response_code(500);
    echo json_encode(['ok' => false, 'error' => $e->getMessage()]), "\n";
}
