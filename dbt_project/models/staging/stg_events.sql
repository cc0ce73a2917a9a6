with

{{ staged_events(source('log', 'events')) }}

select * from renamed
