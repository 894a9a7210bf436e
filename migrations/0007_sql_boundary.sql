-- Issue 13, item 6: `SELECT * FROM tidings.status('<id>')` failed with 22P02 because the enum type and the
-- function shared the name `tidings.status`: PostgreSQL reads `name('literal')` as a cast to the type first. The
-- type is renamed; the functions keep their names. Column and return types refer to the type by oid and follow
-- the rename; function bodies are text, so every function whose body names the type is re-created below
-- (only enqueue_many does: `SELECT p.oid::regprocedure FROM pg_proc p WHERE prosrc ~ 'tidings\.status\M'`).
ALTER TYPE tidings.status RENAME TO message_status;

-- Issue 13, items 2-4 and 7: what is accepted is sendable, exactly as enqueued.
-- * every request rule of the seed documents that can be checked from the message alone is checked here
--   (docs/channels.md, "What enqueue checks", lists each rule with its field and its tests);
-- * recipient.timezone must be a zone the worker knows (the names of chrono-tz, below);
-- * content and recipient must be JSON the worker can read: at most 32 levels deep, numbers within ±1e308;
-- * ids carry 62 random bits per message (0005 gave all messages of one call the same random bits).
-- The same error texts as before for the rules that already existed; new rules are checked after them.

-- The IANA time zone names the worker knows: exactly `chrono_tz::TZ_VARIANTS` of the chrono-tz it is built with
-- (tzdata 2025b, chrono-tz 0.10.4; zones and their backward-compatible links). PostgreSQL's own list is wider
-- (abbreviations such as CEST, POSIX rules such as XYZ+3, `localtime`, any letter case), and a zone the worker
-- cannot parse used to be ignored silently: quiet hours then ran in a zone the producer never asked for.
-- The test `sql_api::time_zones_are_exactly_the_workers` fails when chrono-tz and this table differ: upgrading
-- chrono-tz needs a migration that updates the table.
CREATE TABLE tidings.time_zones (name text PRIMARY KEY);
INSERT INTO tidings.time_zones (name) VALUES
    ('Africa/Abidjan'), ('Africa/Accra'), ('Africa/Addis_Ababa'), ('Africa/Algiers'), ('Africa/Asmara'),
    ('Africa/Asmera'), ('Africa/Bamako'), ('Africa/Bangui'), ('Africa/Banjul'), ('Africa/Bissau'),
    ('Africa/Blantyre'), ('Africa/Brazzaville'), ('Africa/Bujumbura'), ('Africa/Cairo'), ('Africa/Casablanca'),
    ('Africa/Ceuta'), ('Africa/Conakry'), ('Africa/Dakar'), ('Africa/Dar_es_Salaam'), ('Africa/Djibouti'),
    ('Africa/Douala'), ('Africa/El_Aaiun'), ('Africa/Freetown'), ('Africa/Gaborone'), ('Africa/Harare'),
    ('Africa/Johannesburg'), ('Africa/Juba'), ('Africa/Kampala'), ('Africa/Khartoum'), ('Africa/Kigali'),
    ('Africa/Kinshasa'), ('Africa/Lagos'), ('Africa/Libreville'), ('Africa/Lome'), ('Africa/Luanda'),
    ('Africa/Lubumbashi'), ('Africa/Lusaka'), ('Africa/Malabo'), ('Africa/Maputo'), ('Africa/Maseru'),
    ('Africa/Mbabane'), ('Africa/Mogadishu'), ('Africa/Monrovia'), ('Africa/Nairobi'), ('Africa/Ndjamena'),
    ('Africa/Niamey'), ('Africa/Nouakchott'), ('Africa/Ouagadougou'), ('Africa/Porto-Novo'), ('Africa/Sao_Tome'),
    ('Africa/Timbuktu'), ('Africa/Tripoli'), ('Africa/Tunis'), ('Africa/Windhoek'), ('America/Adak'),
    ('America/Anchorage'), ('America/Anguilla'), ('America/Antigua'), ('America/Araguaina'),
    ('America/Argentina/Buenos_Aires'), ('America/Argentina/Catamarca'), ('America/Argentina/ComodRivadavia'),
    ('America/Argentina/Cordoba'), ('America/Argentina/Jujuy'), ('America/Argentina/La_Rioja'),
    ('America/Argentina/Mendoza'), ('America/Argentina/Rio_Gallegos'), ('America/Argentina/Salta'),
    ('America/Argentina/San_Juan'), ('America/Argentina/San_Luis'), ('America/Argentina/Tucuman'),
    ('America/Argentina/Ushuaia'), ('America/Aruba'), ('America/Asuncion'), ('America/Atikokan'), ('America/Atka'),
    ('America/Bahia'), ('America/Bahia_Banderas'), ('America/Barbados'), ('America/Belem'), ('America/Belize'),
    ('America/Blanc-Sablon'), ('America/Boa_Vista'), ('America/Bogota'), ('America/Boise'),
    ('America/Buenos_Aires'), ('America/Cambridge_Bay'), ('America/Campo_Grande'), ('America/Cancun'),
    ('America/Caracas'), ('America/Catamarca'), ('America/Cayenne'), ('America/Cayman'), ('America/Chicago'),
    ('America/Chihuahua'), ('America/Ciudad_Juarez'), ('America/Coral_Harbour'), ('America/Cordoba'),
    ('America/Costa_Rica'), ('America/Coyhaique'), ('America/Creston'), ('America/Cuiaba'), ('America/Curacao'),
    ('America/Danmarkshavn'), ('America/Dawson'), ('America/Dawson_Creek'), ('America/Denver'),
    ('America/Detroit'), ('America/Dominica'), ('America/Edmonton'), ('America/Eirunepe'), ('America/El_Salvador'),
    ('America/Ensenada'), ('America/Fort_Nelson'), ('America/Fort_Wayne'), ('America/Fortaleza'),
    ('America/Glace_Bay'), ('America/Godthab'), ('America/Goose_Bay'), ('America/Grand_Turk'), ('America/Grenada'),
    ('America/Guadeloupe'), ('America/Guatemala'), ('America/Guayaquil'), ('America/Guyana'), ('America/Halifax'),
    ('America/Havana'), ('America/Hermosillo'), ('America/Indiana/Indianapolis'), ('America/Indiana/Knox'),
    ('America/Indiana/Marengo'), ('America/Indiana/Petersburg'), ('America/Indiana/Tell_City'),
    ('America/Indiana/Vevay'), ('America/Indiana/Vincennes'), ('America/Indiana/Winamac'),
    ('America/Indianapolis'), ('America/Inuvik'), ('America/Iqaluit'), ('America/Jamaica'), ('America/Jujuy'),
    ('America/Juneau'), ('America/Kentucky/Louisville'), ('America/Kentucky/Monticello'), ('America/Knox_IN'),
    ('America/Kralendijk'), ('America/La_Paz'), ('America/Lima'), ('America/Los_Angeles'), ('America/Louisville'),
    ('America/Lower_Princes'), ('America/Maceio'), ('America/Managua'), ('America/Manaus'), ('America/Marigot'),
    ('America/Martinique'), ('America/Matamoros'), ('America/Mazatlan'), ('America/Mendoza'),
    ('America/Menominee'), ('America/Merida'), ('America/Metlakatla'), ('America/Mexico_City'),
    ('America/Miquelon'), ('America/Moncton'), ('America/Monterrey'), ('America/Montevideo'), ('America/Montreal'),
    ('America/Montserrat'), ('America/Nassau'), ('America/New_York'), ('America/Nipigon'), ('America/Nome'),
    ('America/Noronha'), ('America/North_Dakota/Beulah'), ('America/North_Dakota/Center'),
    ('America/North_Dakota/New_Salem'), ('America/Nuuk'), ('America/Ojinaga'), ('America/Panama'),
    ('America/Pangnirtung'), ('America/Paramaribo'), ('America/Phoenix'), ('America/Port-au-Prince'),
    ('America/Port_of_Spain'), ('America/Porto_Acre'), ('America/Porto_Velho'), ('America/Puerto_Rico'),
    ('America/Punta_Arenas'), ('America/Rainy_River'), ('America/Rankin_Inlet'), ('America/Recife'),
    ('America/Regina'), ('America/Resolute'), ('America/Rio_Branco'), ('America/Rosario'),
    ('America/Santa_Isabel'), ('America/Santarem'), ('America/Santiago'), ('America/Santo_Domingo'),
    ('America/Sao_Paulo'), ('America/Scoresbysund'), ('America/Shiprock'), ('America/Sitka'),
    ('America/St_Barthelemy'), ('America/St_Johns'), ('America/St_Kitts'), ('America/St_Lucia'),
    ('America/St_Thomas'), ('America/St_Vincent'), ('America/Swift_Current'), ('America/Tegucigalpa'),
    ('America/Thule'), ('America/Thunder_Bay'), ('America/Tijuana'), ('America/Toronto'), ('America/Tortola'),
    ('America/Vancouver'), ('America/Virgin'), ('America/Whitehorse'), ('America/Winnipeg'), ('America/Yakutat'),
    ('America/Yellowknife'), ('Antarctica/Casey'), ('Antarctica/Davis'), ('Antarctica/DumontDUrville'),
    ('Antarctica/Macquarie'), ('Antarctica/Mawson'), ('Antarctica/McMurdo'), ('Antarctica/Palmer'),
    ('Antarctica/Rothera'), ('Antarctica/South_Pole'), ('Antarctica/Syowa'), ('Antarctica/Troll'),
    ('Antarctica/Vostok'), ('Arctic/Longyearbyen'), ('Asia/Aden'), ('Asia/Almaty'), ('Asia/Amman'),
    ('Asia/Anadyr'), ('Asia/Aqtau'), ('Asia/Aqtobe'), ('Asia/Ashgabat'), ('Asia/Ashkhabad'), ('Asia/Atyrau'),
    ('Asia/Baghdad'), ('Asia/Bahrain'), ('Asia/Baku'), ('Asia/Bangkok'), ('Asia/Barnaul'), ('Asia/Beirut'),
    ('Asia/Bishkek'), ('Asia/Brunei'), ('Asia/Calcutta'), ('Asia/Chita'), ('Asia/Choibalsan'), ('Asia/Chongqing'),
    ('Asia/Chungking'), ('Asia/Colombo'), ('Asia/Dacca'), ('Asia/Damascus'), ('Asia/Dhaka'), ('Asia/Dili'),
    ('Asia/Dubai'), ('Asia/Dushanbe'), ('Asia/Famagusta'), ('Asia/Gaza'), ('Asia/Harbin'), ('Asia/Hebron'),
    ('Asia/Ho_Chi_Minh'), ('Asia/Hong_Kong'), ('Asia/Hovd'), ('Asia/Irkutsk'), ('Asia/Istanbul'), ('Asia/Jakarta'),
    ('Asia/Jayapura'), ('Asia/Jerusalem'), ('Asia/Kabul'), ('Asia/Kamchatka'), ('Asia/Karachi'), ('Asia/Kashgar'),
    ('Asia/Kathmandu'), ('Asia/Katmandu'), ('Asia/Khandyga'), ('Asia/Kolkata'), ('Asia/Krasnoyarsk'),
    ('Asia/Kuala_Lumpur'), ('Asia/Kuching'), ('Asia/Kuwait'), ('Asia/Macao'), ('Asia/Macau'), ('Asia/Magadan'),
    ('Asia/Makassar'), ('Asia/Manila'), ('Asia/Muscat'), ('Asia/Nicosia'), ('Asia/Novokuznetsk'),
    ('Asia/Novosibirsk'), ('Asia/Omsk'), ('Asia/Oral'), ('Asia/Phnom_Penh'), ('Asia/Pontianak'),
    ('Asia/Pyongyang'), ('Asia/Qatar'), ('Asia/Qostanay'), ('Asia/Qyzylorda'), ('Asia/Rangoon'), ('Asia/Riyadh'),
    ('Asia/Saigon'), ('Asia/Sakhalin'), ('Asia/Samarkand'), ('Asia/Seoul'), ('Asia/Shanghai'), ('Asia/Singapore'),
    ('Asia/Srednekolymsk'), ('Asia/Taipei'), ('Asia/Tashkent'), ('Asia/Tbilisi'), ('Asia/Tehran'),
    ('Asia/Tel_Aviv'), ('Asia/Thimbu'), ('Asia/Thimphu'), ('Asia/Tokyo'), ('Asia/Tomsk'), ('Asia/Ujung_Pandang'),
    ('Asia/Ulaanbaatar'), ('Asia/Ulan_Bator'), ('Asia/Urumqi'), ('Asia/Ust-Nera'), ('Asia/Vientiane'),
    ('Asia/Vladivostok'), ('Asia/Yakutsk'), ('Asia/Yangon'), ('Asia/Yekaterinburg'), ('Asia/Yerevan'),
    ('Atlantic/Azores'), ('Atlantic/Bermuda'), ('Atlantic/Canary'), ('Atlantic/Cape_Verde'), ('Atlantic/Faeroe'),
    ('Atlantic/Faroe'), ('Atlantic/Jan_Mayen'), ('Atlantic/Madeira'), ('Atlantic/Reykjavik'),
    ('Atlantic/South_Georgia'), ('Atlantic/St_Helena'), ('Atlantic/Stanley'), ('Australia/ACT'),
    ('Australia/Adelaide'), ('Australia/Brisbane'), ('Australia/Broken_Hill'), ('Australia/Canberra'),
    ('Australia/Currie'), ('Australia/Darwin'), ('Australia/Eucla'), ('Australia/Hobart'), ('Australia/LHI'),
    ('Australia/Lindeman'), ('Australia/Lord_Howe'), ('Australia/Melbourne'), ('Australia/NSW'),
    ('Australia/North'), ('Australia/Perth'), ('Australia/Queensland'), ('Australia/South'), ('Australia/Sydney'),
    ('Australia/Tasmania'), ('Australia/Victoria'), ('Australia/West'), ('Australia/Yancowinna'), ('Brazil/Acre'),
    ('Brazil/DeNoronha'), ('Brazil/East'), ('Brazil/West'), ('CET'), ('CST6CDT'), ('Canada/Atlantic'),
    ('Canada/Central'), ('Canada/Eastern'), ('Canada/Mountain'), ('Canada/Newfoundland'), ('Canada/Pacific'),
    ('Canada/Saskatchewan'), ('Canada/Yukon'), ('Chile/Continental'), ('Chile/EasterIsland'), ('Cuba'), ('EET'),
    ('EST'), ('EST5EDT'), ('Egypt'), ('Eire'), ('Etc/GMT'), ('Etc/GMT+0'), ('Etc/GMT+1'), ('Etc/GMT+10'),
    ('Etc/GMT+11'), ('Etc/GMT+12'), ('Etc/GMT+2'), ('Etc/GMT+3'), ('Etc/GMT+4'), ('Etc/GMT+5'), ('Etc/GMT+6'),
    ('Etc/GMT+7'), ('Etc/GMT+8'), ('Etc/GMT+9'), ('Etc/GMT-0'), ('Etc/GMT-1'), ('Etc/GMT-10'), ('Etc/GMT-11'),
    ('Etc/GMT-12'), ('Etc/GMT-13'), ('Etc/GMT-14'), ('Etc/GMT-2'), ('Etc/GMT-3'), ('Etc/GMT-4'), ('Etc/GMT-5'),
    ('Etc/GMT-6'), ('Etc/GMT-7'), ('Etc/GMT-8'), ('Etc/GMT-9'), ('Etc/GMT0'), ('Etc/Greenwich'), ('Etc/UCT'),
    ('Etc/UTC'), ('Etc/Universal'), ('Etc/Zulu'), ('Europe/Amsterdam'), ('Europe/Andorra'), ('Europe/Astrakhan'),
    ('Europe/Athens'), ('Europe/Belfast'), ('Europe/Belgrade'), ('Europe/Berlin'), ('Europe/Bratislava'),
    ('Europe/Brussels'), ('Europe/Bucharest'), ('Europe/Budapest'), ('Europe/Busingen'), ('Europe/Chisinau'),
    ('Europe/Copenhagen'), ('Europe/Dublin'), ('Europe/Gibraltar'), ('Europe/Guernsey'), ('Europe/Helsinki'),
    ('Europe/Isle_of_Man'), ('Europe/Istanbul'), ('Europe/Jersey'), ('Europe/Kaliningrad'), ('Europe/Kiev'),
    ('Europe/Kirov'), ('Europe/Kyiv'), ('Europe/Lisbon'), ('Europe/Ljubljana'), ('Europe/London'),
    ('Europe/Luxembourg'), ('Europe/Madrid'), ('Europe/Malta'), ('Europe/Mariehamn'), ('Europe/Minsk'),
    ('Europe/Monaco'), ('Europe/Moscow'), ('Europe/Nicosia'), ('Europe/Oslo'), ('Europe/Paris'),
    ('Europe/Podgorica'), ('Europe/Prague'), ('Europe/Riga'), ('Europe/Rome'), ('Europe/Samara'),
    ('Europe/San_Marino'), ('Europe/Sarajevo'), ('Europe/Saratov'), ('Europe/Simferopol'), ('Europe/Skopje'),
    ('Europe/Sofia'), ('Europe/Stockholm'), ('Europe/Tallinn'), ('Europe/Tirane'), ('Europe/Tiraspol'),
    ('Europe/Ulyanovsk'), ('Europe/Uzhgorod'), ('Europe/Vaduz'), ('Europe/Vatican'), ('Europe/Vienna'),
    ('Europe/Vilnius'), ('Europe/Volgograd'), ('Europe/Warsaw'), ('Europe/Zagreb'), ('Europe/Zaporozhye'),
    ('Europe/Zurich'), ('GB'), ('GB-Eire'), ('GMT'), ('GMT+0'), ('GMT-0'), ('GMT0'), ('Greenwich'), ('HST'),
    ('Hongkong'), ('Iceland'), ('Indian/Antananarivo'), ('Indian/Chagos'), ('Indian/Christmas'), ('Indian/Cocos'),
    ('Indian/Comoro'), ('Indian/Kerguelen'), ('Indian/Mahe'), ('Indian/Maldives'), ('Indian/Mauritius'),
    ('Indian/Mayotte'), ('Indian/Reunion'), ('Iran'), ('Israel'), ('Jamaica'), ('Japan'), ('Kwajalein'), ('Libya'),
    ('MET'), ('MST'), ('MST7MDT'), ('Mexico/BajaNorte'), ('Mexico/BajaSur'), ('Mexico/General'), ('NZ'),
    ('NZ-CHAT'), ('Navajo'), ('PRC'), ('PST8PDT'), ('Pacific/Apia'), ('Pacific/Auckland'),
    ('Pacific/Bougainville'), ('Pacific/Chatham'), ('Pacific/Chuuk'), ('Pacific/Easter'), ('Pacific/Efate'),
    ('Pacific/Enderbury'), ('Pacific/Fakaofo'), ('Pacific/Fiji'), ('Pacific/Funafuti'), ('Pacific/Galapagos'),
    ('Pacific/Gambier'), ('Pacific/Guadalcanal'), ('Pacific/Guam'), ('Pacific/Honolulu'), ('Pacific/Johnston'),
    ('Pacific/Kanton'), ('Pacific/Kiritimati'), ('Pacific/Kosrae'), ('Pacific/Kwajalein'), ('Pacific/Majuro'),
    ('Pacific/Marquesas'), ('Pacific/Midway'), ('Pacific/Nauru'), ('Pacific/Niue'), ('Pacific/Norfolk'),
    ('Pacific/Noumea'), ('Pacific/Pago_Pago'), ('Pacific/Palau'), ('Pacific/Pitcairn'), ('Pacific/Pohnpei'),
    ('Pacific/Ponape'), ('Pacific/Port_Moresby'), ('Pacific/Rarotonga'), ('Pacific/Saipan'), ('Pacific/Samoa'),
    ('Pacific/Tahiti'), ('Pacific/Tarawa'), ('Pacific/Tongatapu'), ('Pacific/Truk'), ('Pacific/Wake'),
    ('Pacific/Wallis'), ('Pacific/Yap'), ('Poland'), ('Portugal'), ('ROC'), ('ROK'), ('Singapore'), ('Turkey'),
    ('UCT'), ('US/Alaska'), ('US/Aleutian'), ('US/Arizona'), ('US/Central'), ('US/East-Indiana'), ('US/Eastern'),
    ('US/Hawaii'), ('US/Indiana-Starke'), ('US/Michigan'), ('US/Mountain'), ('US/Pacific'), ('US/Samoa'), ('UTC'),
    ('Universal'), ('W-SU'), ('WET'), ('Zulu');

-- A sub-select keeps this function from being inlined; enqueue calls it only for a recipient with a timezone.
CREATE OR REPLACE FUNCTION tidings.is_timezone(tz text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM tidings.time_zones z WHERE z.name = tz)
$$;

-- Two of 0002's helpers, cheaper for the same answers (they run for nearly every message; measured with the
-- backend's CPU time over 200000 calls: 0.73 -> 0.54 us and 0.80 -> 0.42 us). A BETWEEN evaluates its operand
-- twice, so the length is computed once against a range. An E.164 number is read with ->> directly: a JSON
-- number, boolean, object or array never reads as '+' and digits, so the type check was redundant.
CREATE OR REPLACE FUNCTION tidings.is_text(v jsonb, max_len integer DEFAULT 10000) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_typeof(v) = 'string' AND int4range(1, max_len, '[]') @> length(v #>> '{}'), false)
$$;

CREATE FUNCTION tidings.is_e164_text(phone text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(phone ~ '^\+[1-9][0-9]*$' AND int4range(8, 16, '[]') @> length(phone), false)
$$;

-- NULL, or why `v` (the recipient or the content, named `part`) is JSON the worker cannot represent. serde_json
-- stops at 128 nested levels; 32 leaves room for the envelope the adapters wrap around content. It reads numbers
-- as f64, and not exactly (serde_json's default parse is off by an ulp or so): PostgreSQL prints
-- 1.7976931348623157e308 (f64::MAX) as 309 digits, which serde_json reads as out of range. 1e308 and anything
-- smaller in magnitude reads fine, so that is the limit. Numbers too small for an f64 become 0 or a subnormal,
-- not an error, so they pass.
CREATE FUNCTION tidings.check_representable(part text, v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN jsonb_path_exists(v, 'strict $.**{33}') THEN part || ': nested deeper than 32 levels'
        WHEN jsonb_path_exists(v, 'strict $.** ? (@.abs() > 1e308)')
            THEN part || ': numbers must be between -1e308 and 1e308'
    END
$$;

-- Bird media parts (`image.images`, `file.files`): as in 0002, and a file's contentType must be a MIME type as
-- RFC 6838 names them (`type/subtype` with a registered top-level type; seed 002: `video/mp4`, `audio/mpeg`).
CREATE OR REPLACE FUNCTION tidings.check_bird_media(t text, part jsonb) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN NOT CASE WHEN jsonb_typeof(part -> (t || 's')) = 'array'
                      THEN jsonb_array_length(part -> (t || 's')) BETWEEN 1 AND 10 ELSE false END
            THEN format('content.body.%s.%ss: must be an array of 1 to 10 items', t, t)
        WHEN jsonb_path_exists(part -> (t || 's'),
                 '$[*] ? (!exists(@.mediaUrl) || @.mediaUrl.type() != "string" || !(@.mediaUrl like_regex "^https?://"))')
            THEN format('content.body.%s.%ss: every item needs an http(s) mediaUrl', t, t)
        WHEN t = 'file' AND jsonb_path_exists(part -> 'files',
                 '$[*] ? (!exists(@.contentType) || @.contentType.type() != "string")')
            THEN 'content.body.file.files: every item needs a contentType'
        WHEN t = 'file' AND jsonb_path_exists(part -> 'files',
                 '$[*] ? (!(@.contentType like_regex "^(application|audio|font|haptics|image|message|model|multipart|text|video)/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$" flag "i"))')
            THEN 'content.body.file.files: every contentType must be a MIME type such as video/mp4'
        WHEN part ? 'text' AND NOT tidings.is_text(part -> 'text')
            THEN format('content.body.%s.text: must be a string of 1 to 10000 characters', t)
    END
$$;

-- A Bird template (seed 002: `projectId`, `version`, `locale`, `parameters` of `{type, key, value}`, and the
-- template-level `shortLinks`). The first four rules are 0002's.
CREATE FUNCTION tidings.check_bird_template(template jsonb) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(template) <> 'object' THEN 'content.template: must be an object'
        WHEN NOT tidings.is_uuid_text(template -> 'projectId')
            THEN 'content.template.projectId: must be a UUID string'
        WHEN NOT tidings.is_text(template -> 'version', 100)
            THEN 'content.template.version: must be a non-empty string'
        WHEN template ? 'locale' AND NOT tidings.is_text(template -> 'locale', 35)
            THEN 'content.template.locale: must be a non-empty string'
        WHEN template ? 'parameters' AND jsonb_typeof(template -> 'parameters') <> 'array'
            THEN 'content.template.parameters: must be an array'
        WHEN NOT template ? 'locale' THEN 'content.template.locale: required'
        WHEN template - '{projectId,version,locale,parameters,shortLinks}'::text[] <> '{}'::jsonb
            THEN 'content.template.'
                 || tidings.unknown_field(template, '{projectId,version,locale,parameters,shortLinks}') || ': unknown field'
        WHEN template ? 'shortLinks' AND jsonb_typeof(template -> 'shortLinks') NOT IN ('object', 'null')
            THEN 'content.template.shortLinks: must be an object'
        WHEN template ? 'parameters' AND jsonb_path_exists(template -> 'parameters',
                 '$[*] ? (@.type() != "object" || !exists(@."key") || @."key".type() != "string" || @."key" == ""
                                 || !exists(@."type") || @."type".type() != "string" || @."type" == "")')
            THEN 'content.template.parameters: every item needs a type and a key (non-empty strings)'
        WHEN template ? 'parameters' AND jsonb_path_exists(template -> 'parameters',
                 '$[*] ? (@."type" == "string" && (!exists(@."value") || @."value".type() != "string"))')
            THEN 'content.template.parameters: a parameter of type string needs a string value'
    END
$$;

-- The keys of a Bird body of type `t` (already known to hold a valid part `t`) and of that part.
CREATE FUNCTION tidings.check_bird_part(body jsonb, t text, fields text[]) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN body - ARRAY['type', t] <> '{}'::jsonb
            THEN format('content.body.%s: not allowed in a %s body (only type and %s)',
                        tidings.unknown_field(body, ARRAY['type', t]), t, t)
        WHEN (body -> t) - fields <> '{}'::jsonb
            THEN format('content.body.%s.%s: unknown field', t, tidings.unknown_field(body -> t, fields))
        WHEN (body -> t) ? 'metadata' AND jsonb_typeof(body -> t -> 'metadata') <> 'object'
            THEN format('content.body.%s.metadata: must be an object', t)
    END
$$;

-- Bird-shaped content (seed 002), used by the bird_sms and sandbox kinds. 0002's rules in 0002's order, then:
-- the template's rules above, a body holds only `type` and the part its type names, and that part only the
-- fields of its kind (`text`: text, attachments, actions, metadata; `image`: images, text, metadata; `file`:
-- files, text, metadata), with `metadata` an object.
CREATE OR REPLACE FUNCTION tidings.check_bird_content(content jsonb) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN (content -> 'body' IS NULL) = (content -> 'template' IS NULL)
            THEN 'content: must have exactly one of body or template'
        WHEN content - '{body,template}'::text[] <> '{}'::jsonb
            THEN 'content: only body or template are allowed'
        WHEN content -> 'template' IS NOT NULL THEN tidings.check_bird_template(content -> 'template')
        WHEN jsonb_typeof(content -> 'body') <> 'object' THEN 'content.body: must be an object'
        WHEN content #>> '{body,type}' = 'text' THEN CASE
            WHEN NOT tidings.is_text(content #> '{body,text,text}')
                THEN 'content.body.text.text: must be a string of 1 to 10000 characters'
            ELSE tidings.check_bird_part(content -> 'body', 'text', '{text,attachments,actions,metadata}')
            END
        WHEN content #>> '{body,type}' IN ('image', 'file') THEN coalesce(
            tidings.check_bird_media(content #>> '{body,type}', content -> 'body' -> (content #>> '{body,type}')),
            tidings.check_bird_part(content -> 'body', content #>> '{body,type}',
                                    CASE WHEN content #>> '{body,type}' = 'image' THEN '{images,text,metadata}'
                                         ELSE '{files,text,metadata}' END::text[]))
        ELSE 'content.body.type: must be one of text, image, file'
    END
$$;

-- The recipient and content shape of each channel kind. Returns '<field>: <rule>' or NULL. 0002's rules in
-- 0002's order (an Instaply thread id given as a number must now be a whole number, under the same text), then
-- per kind: only the content fields the adapter sends; Insider's `templateId` alone (seed 004: "use only
-- templateId under Content") and never an empty content; instant-app parameter values that are strings,
-- numbers or booleans (seed 000: "a key-value pair", read as text by the instant app).
CREATE OR REPLACE FUNCTION tidings.check_shape(kind text, recipient jsonb, content jsonb) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN kind IN ('sandbox', 'bird_sms') THEN CASE
            WHEN NOT tidings.is_e164_text(recipient ->> 'phone')
                THEN 'recipient.phone: must be an E.164 phone number such as +31612345678'
            ELSE tidings.check_bird_content(content)
            END
        WHEN kind = 'instaply_whatsapp' THEN CASE
            WHEN NOT (tidings.is_text(recipient -> 'customerThreadId', 64)
                      OR (jsonb_typeof(recipient -> 'customerThreadId') = 'number'
                          AND (recipient ->> 'customerThreadId') ~ '^[0-9]{1,19}$'))
                THEN 'recipient.customerThreadId: must be a thread id'
            WHEN NOT (content ? 'text' OR content ? 'contentSid')
                THEN 'content: must have text, contentSid (the fallback template), or both'
            WHEN content ? 'text' AND NOT tidings.is_text(content -> 'text')
                THEN 'content.text: must be a string of 1 to 10000 characters'
            WHEN content ? 'contentSid' AND NOT tidings.is_text(content -> 'contentSid', 64)
                THEN 'content.contentSid: must be a template id'
            WHEN content ? 'updateThreadStatus'
                 AND coalesce(content ->> 'updateThreadStatus', '') NOT IN ('waiting', 'replied', 'resolved')
                THEN 'content.updateThreadStatus: must be one of waiting, replied, resolved'
            WHEN content - '{text,contentSid,updateThreadStatus}'::text[] <> '{}'::jsonb
                THEN 'content.' || tidings.unknown_field(content, '{text,contentSid,updateThreadStatus}')
                     || ': unknown field'
            END
        WHEN kind = 'insider_push' THEN CASE
            WHEN NOT CASE WHEN jsonb_typeof(recipient -> 'applicationIds') = 'array'
                          THEN jsonb_array_length(recipient -> 'applicationIds') > 0
                               AND NOT jsonb_path_exists(recipient -> 'applicationIds',
                                       '$[*] ? (@.type() != "string" || !(@ like_regex "^.{1,128}$" flag "s"))')
                          ELSE false END
                THEN 'recipient.applicationIds: must be a non-empty array of application ids'
            WHEN (recipient ? 'segmentId') = (recipient ? 'tableId')
                THEN 'recipient: must have exactly one of segmentId or tableId'
            WHEN NOT tidings.is_uuid_text(coalesce(recipient -> 'segmentId', recipient -> 'tableId'))
                THEN format('recipient.%s: must be a UUID string',
                            CASE WHEN recipient ? 'segmentId' THEN 'segmentId' ELSE 'tableId' END)
            WHEN (content ? 'content') = (content ? 'multiLangContent')
                THEN 'content: must have exactly one of content or multiLangContent'
            WHEN jsonb_typeof(coalesce(content -> 'content', content -> 'multiLangContent')) <> 'object'
                THEN format('content.%s: must be an object',
                            CASE WHEN content ? 'content' THEN 'content' ELSE 'multiLangContent' END)
            WHEN content ? 'onlyLastEngaged' AND jsonb_typeof(content -> 'onlyLastEngaged') <> 'boolean'
                THEN 'content.onlyLastEngaged: must be true or false'
            WHEN content - '{content,multiLangContent,onlyLastEngaged}'::text[] <> '{}'::jsonb
                THEN 'content.' || tidings.unknown_field(content, '{content,multiLangContent,onlyLastEngaged}')
                     || ': unknown field'
            WHEN coalesce(content -> 'content', content -> 'multiLangContent') = '{}'::jsonb
                THEN format('content.%s: must not be empty',
                            CASE WHEN content ? 'content' THEN 'content' ELSE 'multiLangContent' END)
            WHEN content -> 'content' ? 'templateId' AND NOT (
                     tidings.is_text(content #> '{content,templateId}', 128)
                     OR (jsonb_typeof(content #> '{content,templateId}') = 'number'
                         AND (content #>> '{content,templateId}') ~ '^[0-9]{1,19}$'))
                THEN 'content.content.templateId: must be a template id (a non-empty string or a whole number)'
            WHEN content -> 'content' ? 'templateId' AND (content -> 'content') - 'templateId' <> '{}'::jsonb
                THEN format('content.content.%s: not allowed with templateId (a template is sent by its id alone)',
                            tidings.unknown_field(content -> 'content', '{templateId}'))
            END
        WHEN kind = 'instant_app' THEN CASE
            WHEN NOT (jsonb_typeof(recipient -> 'phone') = 'string'
                      AND (recipient ->> 'phone') ~ '^(\+1)?[2-9][0-9]{9}$')
                THEN 'recipient.phone: must be a 10-digit US number or +1 followed by 10 digits'
            WHEN NOT tidings.is_text(content -> 'message', 1600)
                THEN 'content.message: must be a string of 1 to 1600 characters'
            WHEN NOT tidings.is_text(content -> 'instantAppSchemaApiId', 128)
                THEN 'content.instantAppSchemaApiId: must be a non-empty string'
            WHEN content ? 'instantAppParameters' AND jsonb_typeof(content -> 'instantAppParameters') <> 'object'
                THEN 'content.instantAppParameters: must be an object'
            WHEN content - '{message,instantAppSchemaApiId,instantAppParameters}'::text[] <> '{}'::jsonb
                THEN 'content.' || tidings.unknown_field(content, '{message,instantAppSchemaApiId,instantAppParameters}')
                     || ': unknown field'
            WHEN content ? 'instantAppParameters' AND jsonb_path_exists(content -> 'instantAppParameters',
                     'strict $.* ? (@.type() != "string" && @.type() != "number" && @.type() != "boolean")')
                THEN 'content.instantAppParameters: every value must be a string, number or boolean'
            END
        WHEN kind = 'webhook' THEN NULL -- any JSON object: the receiving gateway owns its schema
        ELSE format('channel: kind %L is not supported', kind)
    END
$$;

-- As in 0005, with the time zone rule's new text (the list of names is the worker's now) and, before it, the
-- check that the recipient and content are JSON the worker can represent.
CREATE OR REPLACE FUNCTION tidings.check_parts(msg jsonb, recipient jsonb, content jsonb, kind text, now timestamptz)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(msg) IS DISTINCT FROM 'object' THEN 'message: must be a JSON object'
        WHEN msg - '{channel,recipient,content,scheduled_for,validity,use_case,ignore_quiet_hours,cap_frequency,priority,tags,reference}'::text[]
             <> '{}'::jsonb
            THEN tidings.unknown_field(msg, '{channel,recipient,content,scheduled_for,validity,use_case,ignore_quiet_hours,cap_frequency,priority,tags,reference}')
                 || ': unknown field'
        WHEN NOT tidings.is_text(msg -> 'channel', 63) THEN 'channel: must be a channel name'
        WHEN kind IS NULL THEN format('channel: unknown channel %L', left(msg ->> 'channel', 63))
        WHEN coalesce(msg -> 'use_case', 'null') <> 'null' AND jsonb_typeof(msg -> 'use_case') <> 'string'
            THEN 'use_case: must be a string'
        WHEN coalesce(msg ->> 'use_case', 'transactional')
             NOT IN ('transactional', 'promotional', 'conversational', 'marketing', '2fa')
            THEN 'use_case: must be one of transactional, promotional, conversational, marketing, 2fa'
        WHEN jsonb_typeof(recipient) IS DISTINCT FROM 'object' THEN 'recipient: must be a JSON object'
        WHEN jsonb_typeof(content) IS DISTINCT FROM 'object' THEN 'content: must be a JSON object'
        WHEN pg_column_size(content) > 65536 THEN 'content: must be at most 64 KiB'
        WHEN pg_column_size(recipient) > 4096 THEN 'recipient: must be at most 4 KiB'
        ELSE coalesce(
            -- Both are rare, so one cheap pass over the whole message decides whether each part must say which:
            -- four passes (depth and numbers, per part) cost about 1.2 us per message, a tenth of bulk enqueue.
            -- `.abs()` is the cheapest number test (it fails, so filters out, on anything but a number). Nothing
            -- is 33 levels deep in fewer than 268 bytes of jsonb (8 per level: a container's header and its
            -- entry in the parent), so small messages skip the depth pass.
            CASE WHEN jsonb_path_exists(msg, 'strict $.** ? (@.abs() > 1e308)')
                      OR (pg_column_size(recipient) + pg_column_size(content) >= 264
                          AND jsonb_path_exists(msg, 'strict $.*.**{33}'))
                 THEN coalesce(tidings.check_representable('recipient', recipient),
                               tidings.check_representable('content', content)) END,
            CASE WHEN recipient ? 'timezone' AND NOT tidings.is_timezone(recipient ->> 'timezone')
                 THEN 'recipient.timezone: must be an IANA time zone name' END,
            tidings.check_shape(kind, recipient, content),
            CASE WHEN msg ?| '{scheduled_for,validity,priority,ignore_quiet_hours,cap_frequency,tags,reference}'::text[]
                 THEN tidings.check_common(msg, now) END)
    END
$$;

-- The validators are internal (new functions are executable by PUBLIC by default).
REVOKE ALL ON FUNCTION tidings.is_e164_text(text), tidings.check_representable(text, jsonb), tidings.check_bird_template(jsonb), tidings.check_bird_part(jsonb, text, text[]) FROM PUBLIC;

-- Bulk enqueue as in 0005 (with the status cast naming the renamed type), except for the ids; see below.
-- CREATE OR REPLACE resets a function's settings, so 0006's generic plan is set again here.
CREATE OR REPLACE FUNCTION tidings.enqueue_many(messages jsonb) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    t timestamptz := now();
    ids uuid[];
    any_due boolean;
    single boolean;
    n integer;
    ms bigint;
    head text;
    rnd bytea;
BEGIN
    IF jsonb_typeof(messages) IS DISTINCT FROM 'array' THEN
        PERFORM tidings.raise_invalid('messages: must be a JSON array of messages', NULL);
    END IF;
    IF jsonb_array_length(messages) > 100000 THEN
        PERFORM tidings.raise_invalid('messages: at most 100000 messages per call', NULL);
    END IF;
    n := jsonb_array_length(messages);
    single := n = 1;
    -- Ids (RFC 9562 UUIDv7): 48 bits of Unix milliseconds, version 7, the message's position in the call in the
    -- 12 bits of rand_a (RFC 9562 6.2, method 1: a counter; after 4096 messages the millisecond steps on, so the
    -- ids of a call follow input order and run at most 25 ms ahead for 100000 messages), the variant, and 62
    -- random bits per message. Those come from SHA-512 in counter mode over a fresh 244-bit seed from
    -- gen_random_uuid() (the Hash_DRBG construction of NIST SP 800-90A): one id reveals nothing of another,
    -- and eight messages share one hash. gen_random_uuid() per message costs ~1.5 us each (OpenSSL RAND_bytes
    -- per call), more than the rest of the id; the stream costs ~0.2 us per message.
    ms := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    head := lpad(to_hex(ms), 12, '0') || '7';
    rnd := (SELECT string_agg(sha512(s.seed || int4send(g)), ''::bytea)
              FROM (SELECT uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) AS seed) s,
                   generate_series(0, (n - 1) / 8) g);

    WITH input AS (
        SELECT e.ord, e.msg, e.recipient, e.content, c.kind, c.policy,
               tidings.check_parts(e.msg, e.recipient, e.content, c.kind, t) AS problem
          FROM (SELECT x.msg, x.ord, x.msg -> 'recipient' AS recipient, x.msg -> 'content' AS content
                  FROM jsonb_array_elements(messages) WITH ORDINALITY AS x(msg, ord)
                OFFSET 0) e
          LEFT JOIN tidings.channels c ON c.name = e.msg ->> 'channel'
    ), valid AS (
        -- `opts`: the message sets one of the optional keys below; without any (bulk enqueue, mostly), their
        -- defaults are used without looking each one up.
        SELECT i.ord, i.msg, i.recipient, i.content, i.policy,
               coalesce(i.msg ->> 'use_case', 'transactional') AS use_case,
               i.msg ?| '{scheduled_for,validity,priority,ignore_quiet_hours,cap_frequency,tags,reference}'::text[] AS opts,
               CASE WHEN i.msg ? 'scheduled_for' THEN (i.msg ->> 'scheduled_for')::timestamptz END AS scheduled_for
          FROM input i
         WHERE i.problem IS NULL OR tidings.raise_invalid(i.problem, CASE WHEN NOT single THEN i.ord END)
    ), planned AS (
        SELECT v.ord, (CASE WHEN v.ord <= 4096 THEN head ELSE lpad(to_hex(ms + (v.ord - 1) / 4096), 12, '0') || '7' END
                || lpad(to_hex((v.ord - 1) % 4096), 3, '0')
                || encode(set_byte(substr(rnd, (v.ord::integer - 1) * 8 + 1, 8), 0,
                                   (get_byte(rnd, (v.ord::integer - 1) * 8) & 63) | 128), 'hex'))::uuid AS id, v.msg ->> 'channel' AS channel,
               v.recipient, v.content, v.use_case,
               CASE WHEN v.scheduled_for > t + tidings.send_now_window() THEN 'scheduled' ELSE 'accepted' END::tidings.message_status AS status,
               CASE WHEN v.opts THEN coalesce((v.msg ->> 'priority')::smallint, 0) ELSE 0 END AS priority,
               v.scheduled_for,
               CASE WHEN v.scheduled_for > t + tidings.send_now_window() THEN v.scheduled_for ELSE t END AS run_at,
               greatest(t, v.scheduled_for) + make_interval(secs => coalesce(
                   CASE WHEN v.opts THEN (v.msg ->> 'validity')::integer END,
                   (v.policy -> 'validity' ->> v.use_case)::integer,
                   CASE WHEN v.use_case = '2fa' THEN 600 ELSE 129600 END)) AS expires_at,
               v.opts AND coalesce((v.msg ->> 'ignore_quiet_hours')::boolean, false) AS ignore_quiet_hours,
               v.opts AND coalesce((v.msg ->> 'cap_frequency')::boolean, false) AS cap_frequency,
               CASE WHEN v.opts AND jsonb_typeof(v.msg -> 'tags') = 'array'
                    THEN ARRAY(SELECT lower(x) FROM jsonb_array_elements_text(v.msg -> 'tags') x)
                    ELSE '{}' END AS tags,
               CASE WHEN v.opts THEN v.msg ->> 'reference' END AS reference,
               coalesce((v.policy ->> 'max_attempts')::integer, 10) AS max_attempts
          FROM valid v
    ), plain AS (
        -- Without a reference there is nothing to conflict with: a plain insert (no speculative insertion).
        INSERT INTO tidings.messages AS m (id, channel, recipient, content, use_case, status, priority, scheduled_for,
                                           run_at, expires_at, ignore_quiet_hours, cap_frequency, tags, reference,
                                           max_attempts, created_at, updated_at)
        SELECT id, channel, recipient, content, use_case, status, priority, scheduled_for, run_at, expires_at,
               ignore_quiet_hours, cap_frequency, tags, reference, max_attempts, t, t
          FROM planned
         WHERE reference IS NULL
         ORDER BY ord
        RETURNING m.id, m.status, m.channel, m.reference
    ), referenced AS (
        INSERT INTO tidings.messages AS m (id, channel, recipient, content, use_case, status, priority, scheduled_for,
                                           run_at, expires_at, ignore_quiet_hours, cap_frequency, tags, reference,
                                           max_attempts, created_at, updated_at)
        SELECT id, channel, recipient, content, use_case, status, priority, scheduled_for, run_at, expires_at,
               ignore_quiet_hours, cap_frequency, tags, reference, max_attempts, t, t
          FROM planned
         WHERE reference IS NOT NULL
         ORDER BY ord
        ON CONFLICT (channel, reference) WHERE reference IS NOT NULL DO NOTHING
        RETURNING m.id, m.status, m.channel, m.reference
    ), ins AS (
        SELECT * FROM plain UNION ALL SELECT * FROM referenced
    ), ev AS (
        INSERT INTO tidings.message_events (message_id, at, status, reason)
        SELECT id, t, status, 'enqueued' FROM ins
    )
    SELECT array_agg(coalesce(
               i.id,
               (SELECT i2.id FROM ins i2 WHERE i2.channel = p.channel AND i2.reference = p.reference),
               (SELECT m.id FROM tidings.messages m WHERE m.channel = p.channel AND m.reference = p.reference))
           ORDER BY p.ord),
           coalesce(bool_or(i.status = 'accepted'), false)
      INTO ids, any_due
      FROM planned p
      LEFT JOIN ins i ON i.id = p.id;

    -- One wake-up per transaction: PostgreSQL folds identical notifications of one transaction into one.
    IF any_due THEN
        PERFORM pg_notify('tidings', '');
    END IF;
    RETURN QUERY SELECT unnest(ids);
END $$;
